"""Helpers for the deployment tests: the real `serve` as a process, a real nginx."""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port, in_ci

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
SITE_CONF = ROOT / "deploy" / "nginx" / "targetsms-receiver.conf"


def wait_until_answering(url: str, timeout: float = 20) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(url, timeout=2)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class ServeProcess:
    """`targetsms-receiver serve` (or another command line) as a real process."""

    def __init__(
        self,
        directory: Path,
        env: dict[str, str],
        command: Callable[[int], list[str]] | None = None,
        bin_dir: Path = VENV_BIN,
    ) -> None:
        """`command(port)` gives the command line; default `serve` on loopback.

        `bin_dir` comes first on PATH: this virtualenv's, or one the wheel was installed in.
        """
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = command(self.port) if command else [
            "targetsms-receiver", "serve", "--host", "127.0.0.1", "--port", str(self.port),
        ]  # fmt: skip
        self.directory = directory
        self.log_path = directory / f"serve-{self.port}.log"
        path = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
        self.env = {"PATH": path, "HOME": str(directory), **env}
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServeProcess:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command, cwd=self.directory, env=self.env, stdout=log, stderr=log
            )
        try:
            # Generous: a first start from a new virtualenv on a busy 2-core machine is slow.
            wait_until_answering(self.url + "/livez", timeout=60)
        except httpx.TransportError:
            self.kill()
            raise RuntimeError(f"serve did not start:\n{self.logs()}") from None
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()

    def terminate(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")


def nginx_binary() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
    )
    if found is None:
        if in_ci():
            pytest.fail("CI=true but nginx is not installed (make test installs it)")
        pytest.skip("nginx is not installed (make test installs it; CI=true makes this fail)")
    return found


# The deploy/ site's paths for the operator's files, replaced by a test's own.
TLS_CERTIFICATE = "/etc/nginx/tls/fullchain.pem"
TLS_KEY = "/etc/nginx/tls/privkey.pem"
ACME_WEBROOT = "root /var/www/acme;"


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key (openssl, as an operator would)."""
    certificate, key = directory / "fullchain.pem", directory / "privkey.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "2", "-subj", "/CN=localhost", "-keyout", str(key),
            "-out", str(certificate), "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return certificate, key


class Nginx:
    """A real nginx on loopback with deploy/'s site config.

    Changed: the ports (443 and 80 become free loopback ports), the upstream,
    and the operator's files (a self-signed certificate made here, a webroot
    in `directory`), plus any `changes` ((old, new) pairs) a test asks for.
    `url` is the https side; `http_url` the plain-HTTP one (ACME and redirects).
    """

    def __init__(
        self, directory: Path, upstream_port: int, changes: tuple[tuple[str, str], ...] = ()
    ) -> None:
        self.binary = nginx_binary()
        self.directory = directory
        self.port, self.http_port = free_port(), free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.http_url = f"http://127.0.0.1:{self.http_port}"
        self.certificate, key = self_signed_certificate(directory)
        self.webroot = directory / "acme"
        self.webroot.mkdir()
        self.access_log = directory / "access.log"  # the site logs to stdout
        self.stderr_log = directory / "stderr.log"
        self.error_log = directory / "error.log"
        site = SITE_CONF.read_text()
        for old, new in (
            ("server api:8000;", f"server 127.0.0.1:{upstream_port};"),
            ("listen 80;", f"listen 127.0.0.1:{self.http_port};"),
            ("listen 443 ssl;", f"listen 127.0.0.1:{self.port} ssl;"),
            (TLS_CERTIFICATE, str(self.certificate)),
            (TLS_KEY, str(key)),
            (ACME_WEBROOT, f"root {self.webroot};"),
            *changes,
        ):
            site = substitute(site, old, new)
        (directory / "site.conf").write_text(site)
        # As root, workers would run as nobody, who cannot enter pytest's 0700 tmp dirs.
        user = "user root;" if os.geteuid() == 0 else ""
        (directory / "nginx.conf").write_text(
            f"""{user}
worker_processes 1;
pid {directory}/nginx.pid;
error_log {self.error_log} info;
events {{ worker_connections 128; }}
http {{
    client_body_temp_path {directory}/client_body;
    proxy_temp_path {directory}/proxy;
    include {directory}/site.conf;
}}
"""
        )
        self.process: subprocess.Popen[bytes] | None = None

    def tls_context(self) -> ssl.SSLContext:
        """A client context that trusts this nginx's certificate (and only it)."""
        return ssl.create_default_context(cafile=str(self.certificate))

    def __enter__(self) -> Nginx:
        command = [
            self.binary, "-p", str(self.directory), "-c", str(self.directory / "nginx.conf"),
            "-e", str(self.error_log), "-g", "daemon off;",
        ]  # fmt: skip
        with self.access_log.open("wb") as out, self.stderr_log.open("wb") as err:
            self.process = subprocess.Popen(command, stdout=out, stderr=err)
        deadline = time.monotonic() + 10
        while True:
            try:
                httpx.get(self.url + "/", timeout=2, verify=self.tls_context())
                return self
            except httpx.TransportError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"nginx did not start: {self.logs()}") from None
                time.sleep(0.05)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful: flushes the logs
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def logs(self) -> str:
        parts = (self.access_log, self.stderr_log, self.error_log)
        return "\n".join(p.read_text(errors="replace") for p in parts if p.exists())


def substitute(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} must appear exactly once in the site config"
    return text.replace(old, new)


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """`{(sample name, sorted labels): value}` from an exposition text."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def metric(text: str, name: str, **labels: str) -> float:
    return metric_samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


# --- The wheel, as a user installs it (tests/test_packaging.py, tests/test_dockerfile.py) ---


def build_context() -> list[str]:
    """The top-level names .dockerignore lets into the image's build context."""
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line[1:].rstrip("/") for line in lines if line.startswith("!")]


def run_checked(command: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run with only a plain PATH (no virtualenv, no PYTHONPATH); fail with its output."""
    result = subprocess.run(
        command,
        cwd=cwd,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(cwd), **env},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, f"{command}:\n{result.stdout}\n{result.stderr}"
    return result


def build_wheel(source: Path, dist: Path) -> Path:
    """A wheel built from a copy of the build context only (as the image's builder does)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in build_context():
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=ignore)
        elif (ROOT / name).exists():
            shutil.copy2(ROOT / name, source / name)
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(dist), "."]
    run_checked(pip_wheel, source)
    (built,) = dist.glob("*.whl")
    assert zipfile.is_zipfile(built)
    return built


def install_wheel(wheel: Path, venv: Path) -> Path:
    """A new virtualenv with the wheel and its dependencies (from the index); its bin/."""
    run_checked([sys.executable, "-m", "venv", str(venv)], venv.parent)
    run_checked([str(venv / "bin" / "pip"), "install", "--quiet", str(wheel)], venv.parent)
    return venv / "bin"
