"""The package as a user gets it: a wheel, installed into a new virtualenv, run in an empty folder.

The wheel is built from a copy of exactly what the image's build context holds
(.dockerignore), so a file the wheel needs but the context leaves out fails
here too. Installing it resolves the dependencies from the package index, as
`pip install .` does for a user: slow (a minute or two, once per run, shared
with tests/test_dockerfile.py), and part of the normal suite.
"""

from __future__ import annotations

import tomllib
import zipfile
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from app.cli import main as cli
from tests.conftest import CALLBACK_PATH, TEST_TOKEN
from tests.deploy_helpers import ROOT, ServeProcess, run_checked

PUSH = b'<request><state id_sms="4242" time="2026-11-20 12:00:00">deliver</state></request>'
READ_KEY = "packaging-read-key"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def source_files(folder: str) -> set[str]:
    return {
        path.relative_to(ROOT / folder).as_posix()
        for path in (ROOT / folder).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


def test_the_wheel_holds_every_file_of_the_app_and_the_migrations(built_wheel: Path) -> None:
    names = set(zipfile.ZipFile(built_wheel).namelist())
    for folder, inside in (("app", "app/"), ("migrations", "app/migrations/")):
        missing = {name for name in source_files(folder) if inside + name not in names}
        assert not missing, f"{folder}/ files not in the wheel: {sorted(missing)}"
    # Nothing of the checkout's top level besides the package.
    tops = {name.split("/")[0] for name in names}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"app"}


@pytest.mark.slow
def test_the_installed_wheel_migrates_serves_and_answers_in_an_empty_folder(
    installed_wheel: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    command = str(installed_wheel / "targetsms-receiver")
    env = {"DATABASE_URL": "sqlite:///service.db", "CALLBACK_TOKEN": TEST_TOKEN}
    where = run_checked(
        [str(installed_wheel / "python"), "-c", "import app; print(app.__file__)"], empty
    )
    assert where.stdout.startswith(str(installed_wheel.parent))  # the wheel's copy, not ours
    run_checked([command, "migrate"], empty, **env)
    assert (empty / "service.db").is_file()

    def serve(port: int) -> list[str]:
        return [command, "serve", "--no-migrate", "--port", str(port)]

    with ServeProcess(empty, env | {"API_KEYS": READ_KEY}, serve, installed_wheel) as service:
        answer = httpx.post(service.url + CALLBACK_PATH, content=PUSH, timeout=30)
        assert answer.status_code == 200, service.logs()
        assert "<id_sms>4242</id_sms>" in answer.text
        auth = {"Authorization": f"Bearer {READ_KEY}"}
        stored = httpx.get(service.url + "/api/v1/messages/4242", headers=auth, timeout=30)
        assert stored.status_code == 200, stored.text
        assert stored.json()["status"] == "deliver"


@pytest.mark.slow
def test_serve_alone_migrates_sqlite_in_an_empty_folder(
    installed_wheel: Path, tmp_path: Path
) -> None:
    env = {"DATABASE_URL": "sqlite:///fresh.db", "CALLBACK_TOKEN": TEST_TOKEN}

    def serve(port: int) -> list[str]:
        return [str(installed_wheel / "targetsms-receiver"), "serve", "--port", str(port)]

    with ServeProcess(tmp_path, env, serve, installed_wheel) as service:
        answer = httpx.post(service.url + CALLBACK_PATH, content=PUSH, timeout=30)
        assert answer.status_code == 200, service.logs()
        assert "<id_sms>4242</id_sms>" in answer.text


@pytest.mark.slow
def test_the_installed_command_prints_the_package_version(
    installed_wheel: Path, tmp_path: Path
) -> None:
    shown = run_checked([str(installed_wheel / "targetsms-receiver"), "--version"], tmp_path)
    assert shown.stdout.strip() == f"targetsms-receiver {VERSION}"


def test_version_comes_from_the_installed_metadata() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"targetsms-receiver {VERSION}\n"
