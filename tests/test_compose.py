"""deploy/compose.yaml and deploy/env.example: they parse, and point only at what exists."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from app.cli import main as cli
from app.config import Settings
from tests.deploy_helpers import ROOT

DEPLOY = ROOT / "deploy"


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def test_the_services_and_their_commands() -> None:
    found = services()
    assert set(found) == {"postgres", "migrate", "api", "poller", "nginx", "deliverer"}
    assert found["migrate"]["command"] == ["migrate"]
    assert found["api"]["command"][:1] == ["serve"]
    assert found["poller"]["command"][0] == "poll"
    assert found["api"]["deploy"]["replicas"] == 2
    # Outbound webhooks: sent by the deliverer service, not by the API replicas.
    assert found["deliverer"]["command"] == ["deliver"]
    assert found["api"]["environment"]["WEBHOOK_DELIVERY"] == "false"
    # Migrations run once, before the API and the poller, never at API start.
    for name in ("api", "poller", "deliverer"):
        assert found[name]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }
    assert found["migrate"]["restart"] == "no"
    assert found["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    # The data outlives the containers.
    assert "pgdata:/var/lib/postgresql/data" in found["postgres"]["volumes"]
    assert "pgdata" in compose()["volumes"]
    # Every command the services run is one of the CLI's.
    for service in found.values():
        if "command" in service:
            assert service["command"][0] in cli.commands


def test_the_app_trusts_exactly_nginx() -> None:
    found = services()
    nginx_address = found["nginx"]["networks"]["internal"]["ipv4_address"]
    for name in ("api", "poller", "migrate"):
        assert found[name]["environment"]["TRUSTED_PROXIES"] == f"{nginx_address}/32"
    assert found["api"]["environment"]["PROMETHEUS_MULTIPROC_DIR"]
    assert "ports" not in found["api"]  # the app port is internal only


def test_every_referenced_file_exists() -> None:
    found = services()
    for name in ("migrate", "api", "poller"):
        build = found[name]["build"]
        context = DEPLOY / build["context"]
        assert (context / build["dockerfile"]).is_file()
        env_file = DEPLOY / found[name]["env_file"]
        # deploy/.env holds secrets and is made from the example by the operator.
        assert env_file.name == ".env"
        assert (env_file.parent / "env.example").is_file()
    for volume in found["nginx"]["volumes"]:
        source = default_of(volume.rsplit(":", 2)[0])
        assert (DEPLOY / source).exists(), source
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()


def test_env_example_lists_every_setting() -> None:
    text = (DEPLOY / "env.example").read_text()
    listed = set(re.findall(r"^(?:# )?([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE))
    settings = {name.upper() for name in Settings.model_fields}
    assert settings <= listed, f"missing from deploy/env.example: {settings - listed}"
    # And every setting has a comment of its own right above it.
    lines = text.splitlines()
    for name in settings:
        index = next(i for i, line in enumerate(lines) if re.match(rf"(# )?{name}=", line))
        above = lines[index - 1]
        assert above.startswith("# ") and "=" not in above.split()[1], name


def test_env_example_is_a_valid_environment(tmp_path: Path) -> None:
    # Its uncommented values must be accepted by the settings as they are.
    values = dict(
        line.split("=", 1)
        for line in (DEPLOY / "env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    env_file = tmp_path / ".env"
    env_file.write_text("\n".join(f"{key}={value}" for key, value in values.items()))
    loaded = Settings(_env_file=env_file)  # type: ignore[call-arg]
    assert loaded.log_format == "json"


def default_of(value: str) -> str:
    """`${NAME:-default}` as compose reads it with NAME unset."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_nginx_publishes_https_and_http_with_the_operators_files() -> None:
    nginx = services()["nginx"]
    assert [default_of(port) for port in nginx["ports"]] == ["443:443", "80:80"]
    mounts = {default_of(v).split(":")[1]: default_of(v) for v in nginx["volumes"]}
    site = (DEPLOY / "nginx" / "targetsms-receiver.conf").read_text()
    # Where the site reads the certificate, key and webroot, the operator's folders are mounted.
    assert mounts["/etc/nginx/tls"] == "./tls:/etc/nginx/tls:ro"
    assert "ssl_certificate /etc/nginx/tls/fullchain.pem;" in site
    assert "ssl_certificate_key /etc/nginx/tls/privkey.pem;" in site
    assert mounts["/var/www/acme"] == "./acme:/var/www/acme:ro"
    assert "root /var/www/acme;" in site
    # Neither folder's contents are ever committed (certificates, keys, challenges).
    for folder in ("tls", "acme"):
        assert (DEPLOY / folder / ".gitignore").read_text().splitlines()[1:] == ["*", "!.gitignore"]


def test_the_poller_serves_its_metrics_on_the_internal_network_only() -> None:
    poller = services()["poller"]
    command = poller["command"]
    port = command[command.index("--metrics-port") + 1]
    assert command[command.index("--metrics-host") + 1] == "0.0.0.0"  # noqa: S104 (in its container)
    assert poller["expose"] == [port]
    assert "ports" not in poller
