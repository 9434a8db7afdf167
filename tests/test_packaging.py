"""The package as a user gets it: a wheel, installed into a new virtualenv, run in an empty folder.

The wheel is built from a copy of exactly what the image's build context holds
(.dockerignore), so a file the wheel needs but the context leaves out fails
here too. Installing it resolves the dependencies from the package index, as
`pip install .` would for a user: this takes a while (marked slow), and runs in
the normal suite.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from app.cli import main as cli
from tests.conftest import CALLBACK_PATH, TEST_TOKEN
from tests.deploy_helpers import ROOT, ServeProcess

PUSH = b'<request><state id_sms="4242" time="2026-11-20 12:00:00">deliver</state></request>'
READ_KEY = "packaging-read-key"


def build_context() -> list[str]:
    """The top-level names .dockerignore lets into the build context."""
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line[1:].rstrip("/") for line in lines if line.startswith("!")]


def source_files(folder: str) -> set[str]:
    return {
        path.relative_to(ROOT / folder).as_posix()
        for path in (ROOT / folder).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


def run(command: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        command,
        cwd=cwd,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(cwd), **env},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"{command}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source")
    for name in build_context():
        if (ROOT / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(ROOT / name, source / name, ignore=ignore)
        elif (ROOT / name).exists():
            shutil.copy2(ROOT / name, source / name)
    dist = tmp_path_factory.mktemp("dist")
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(dist), "."]
    run(pip_wheel, source)
    (built,) = dist.glob("*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The `bin/` folder of a new virtualenv with only the wheel (and its dependencies)."""
    venv = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", str(venv)], venv)
    run([str(venv / "bin" / "pip"), "install", "--quiet", str(wheel)], venv)
    yield venv / "bin"


def test_the_wheel_holds_every_file_of_the_app_and_the_migrations(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder, inside in (("app", "app/"), ("migrations", "app/migrations/")):
        missing = {name for name in source_files(folder) if inside + name not in names}
        assert not missing, f"{folder}/ files not in the wheel: {sorted(missing)}"
    # Nothing of the checkout's top level besides the package.
    tops = {name.split("/")[0] for name in names}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"app"}


@pytest.mark.slow
def test_the_installed_wheel_migrates_serves_and_answers_in_an_empty_folder(
    installed: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {"DATABASE_URL": "sqlite:///service.db", "CALLBACK_TOKEN": TEST_TOKEN}
    where = run([str(installed / "python"), "-c", "import app; print(app.__file__)"], empty)
    assert where.stdout.startswith(str(installed.parent))  # the wheel's copy, not this checkout
    run([str(installed / "targetsms-receiver"), "migrate"], empty, **env)
    assert (empty / "service.db").is_file()

    def serve(port: int) -> list[str]:
        return [str(installed / "targetsms-receiver"), "serve", "--port", str(port)]

    with ServeProcess(empty, env | {"API_KEYS": READ_KEY}, serve) as service:
        answer = httpx.post(service.url + CALLBACK_PATH, content=PUSH, timeout=30)
        assert answer.status_code == 200, service.logs()
        assert "<id_sms>4242</id_sms>" in answer.text
        auth = {"Authorization": f"Bearer {READ_KEY}"}
        stored = httpx.get(service.url + "/api/v1/messages/4242", headers=auth, timeout=30)
        assert stored.status_code == 200, stored.text
        assert stored.json()["status"] == "deliver"


@pytest.mark.slow
def test_the_installed_command_prints_the_package_version(installed: Path, tmp_path: Path) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    shown = run([str(installed / "targetsms-receiver"), "--version"], tmp_path)
    assert shown.stdout.strip() == f"targetsms-receiver {version}"


def test_version_comes_from_the_installed_metadata() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"targetsms-receiver {version}\n"
