"""The Makefile's install steps, read with `make -n` (nothing installed), and `make clean` run."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.deploy_helpers import ROOT


def make(*args: str, cwd: Path = ROOT) -> str:
    result = subprocess.run(
        ["make", "--no-print-directory", "-f", str(ROOT / "Makefile"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert not result.stderr, result.stderr  # e.g. "Circular ... dependency dropped"
    return result.stdout


def installs(plan: str) -> list[str]:
    return [
        line for line in plan.splitlines() if "pip install" in line and "--upgrade pip" not in line
    ]


def fresh_venv(tmp_path: Path) -> str:
    return f"VENV={tmp_path / 'venv'}"


def test_run_installs_the_service_without_the_test_extras(tmp_path: Path) -> None:
    plan = make("-n", "run", fresh_venv(tmp_path))
    assert installs(plan) == [f"{tmp_path}/venv/bin/pip install --quiet -e ."]
    assert "serve" in plan


def test_test_installs_the_extras_even_after_run(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    fresh = make("-n", "test", fresh_venv(tmp_path))
    assert f"-m venv {venv}" in fresh  # a fresh clone: the virtualenv, the service, the extras
    assert installs(fresh) == [
        f"{venv}/bin/pip install --quiet -e .",
        f"{venv}/bin/pip install --quiet -e '.[test]'",
    ]
    # As after `make run`: the service's stamp is there and newer than pyproject.toml.
    (venv / "bin").mkdir(parents=True)
    stamp = venv / "bin" / "targetsms-receiver"
    stamp.touch()
    later = (ROOT / "pyproject.toml").stat().st_mtime + 1  # newer, and not in the future
    os.utime(stamp, (later, later))
    plan = make("-n", "test", fresh_venv(tmp_path))
    assert installs(plan) == [f"{venv}/bin/pip install --quiet -e '.[test]'"]
    # And once the extras are in, nothing is installed again.
    (venv / "bin" / "pytest").touch()
    os.utime(venv / "bin" / "pytest", (later + 1, later + 1))
    assert installs(make("-n", "lint", fresh_venv(tmp_path))) == []


def test_clean_removes_the_walkthroughs_env_file(tmp_path: Path) -> None:
    shutil.copy2(ROOT / "Makefile", tmp_path / "Makefile")
    for name in (".env", "targetsms-receiver.db", "keep.txt"):
        (tmp_path / name).write_text("x")
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    make("clean", cwd=tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["Makefile", "keep.txt"]
