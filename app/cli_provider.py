"""The commands that talk to TargetSMS: `poll`, `callback-url`, and the local `simulator`.

Exit codes: 0 done; 1 the provider failed or disagreed (a `--once` pass ended
by a provider error, a URL that does not match or was not confirmed);
2 a refused URL or bad usage; 3 the provider is not configured or refused our
credentials.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

import click
from sqlalchemy import Engine

from app import callback_url, metrics
from app.config import Settings
from app.db import create_db_engine
from app.logs import configure_logging
from app.poller import CredentialsRefused, PassResult, Poller
from app.provider import (
    AccountBlocked,
    AuthenticationFailed,
    ProviderError,
    ProviderRejected,
    TargetSMSClient,
)
from app.selfheal import SelfHeal
from app.tokens import callback_token

log = logging.getLogger("app.poller")

EXIT_PROVIDER, EXIT_USAGE, EXIT_CREDENTIALS = 1, 2, 3
T = TypeVar("T")


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _client(settings: Settings) -> TargetSMSClient:
    try:
        return callback_url.provider_client(settings)
    except callback_url.ProviderNotConfigured:
        _fail("set TARGETSMS_LOGIN and TARGETSMS_PASSWORD first", EXIT_CREDENTIALS)


# --- poll ---------------------------------------------------------------------------


@click.command()
@click.option("--once", is_flag=True, help="Do one pass and exit (for cron and tests).")
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Serve the poller's Prometheus metrics on this port (default: none).",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    help="Address for --metrics-port (0.0.0.0 in a container).",
)
def poll(once: bool, metrics_port: int | None, metrics_host: str) -> None:
    """Ask the provider (state.php) for statuses that callbacks did not bring.

    Runs until SIGTERM/SIGINT (the batch in hand is stored whole or dropped,
    never half-stored), then exits 0.
    """
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    client = _client(settings)
    if metrics_port is not None:
        _serve_metrics(metrics_host, metrics_port)
    engine = create_db_engine(settings)
    try:
        code = asyncio.run(_poll(settings, engine, client, once))
    finally:
        engine.dispose()
    sys.exit(code)


async def _poll(settings: Settings, engine: Engine, client: TargetSMSClient, once: bool) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _stopping, stop, signum)
    try:
        async with client:
            hooks = SelfHeal(settings, engine, client)
            poller = MeteredPoller(settings, engine, client, stop=stop, hooks=hooks)
            result = await poller.run(once=once)
    except CredentialsRefused as exc:
        log.error(
            "the provider refused our credentials (%s): polling stopped. "
            "Check TARGETSMS_LOGIN and TARGETSMS_PASSWORD.",
            exc,
        )
        return EXIT_CREDENTIALS
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    return EXIT_PROVIDER if once and result.error else 0


def _serve_metrics(host: str, port: int) -> None:
    try:
        metrics.serve_poller_metrics(host, port)
    except OSError as exc:  # taken, or an address this machine does not have
        _fail(f"cannot serve metrics on {host}:{port}: {exc.strerror}", EXIT_USAGE)
    log.info("poller metrics on http://%s:%d/metrics", host, port)


class MeteredPoller(Poller):
    """The poller, also stamping the time of each pass that ended without an error."""

    async def run_pass(self) -> PassResult:
        result = await super().run_pass()
        if result.error is None:
            metrics.record_poll_success()
        return result


def _stopping(stop: asyncio.Event, signum: int) -> None:
    log.info("%s: stopping after the batch in hand", signal.Signals(signum).name)
    stop.set()


# --- callback-url ---------------------------------------------------------------------


def _with_provider(settings: Settings, call: Callable[[TargetSMSClient], Awaitable[T]]) -> T:
    client = _client(settings)

    async def run() -> T:
        async with client:
            return await call(client)

    try:
        return asyncio.run(run())
    except ProviderRejected as exc:
        refused = isinstance(exc, AuthenticationFailed | AccountBlocked)
        code = EXIT_CREDENTIALS if refused else EXIT_PROVIDER
        _fail(f"the provider refused the request: {exc.text}", code)
    except ProviderError as exc:
        _fail(f"the provider call failed: {exc}", EXIT_PROVIDER)


def _token(settings: Settings) -> str:
    engine = create_db_engine(settings)
    try:
        return callback_token(settings, engine)
    finally:
        engine.dispose()


def _show(url: callback_url.CallbackUrl) -> None:
    # The operator's own terminal: the token is shown, as `callback-path` does.
    click.echo(f"provider: {url.provider_url or '(none set)'}")
    click.echo(f"expected: {url.expected_url or '(PUBLIC_URL is not set)'}")
    click.echo(f"match:    {'yes' if url.matches else 'no'}")


@click.group("callback-url", invoke_without_command=True)
@click.pass_context
def callback_url_command(ctx: click.Context) -> None:
    """Show the push URL the provider has and the one it should have; exit 1 if they differ.

    The expected URL is PUBLIC_URL + the callback path with its token.
    """
    if ctx.invoked_subcommand is not None:
        return
    settings = Settings()
    expected = callback_url.expected_url(settings, _token(settings))
    url = _with_provider(settings, lambda client: callback_url.current(client, expected))
    _show(url)
    sys.exit(0 if url.matches else EXIT_PROVIDER)


@callback_url_command.command("set")
@click.argument("url", required=False)
@click.option("--force", is_flag=True, help="Allow a URL that is not https or not our path.")
def set_callback_url(url: str | None, force: bool) -> None:
    """Register URL (default: PUBLIC_URL + the callback path) with the provider.

    Then read it back, and exit 1 if the provider has another one. Without
    --force, a URL that is not https or does not end in our callback path with
    the right token is refused (exit 2). Exit 0 once the provider confirms it,
    even when it is not PUBLIC_URL's (with --force): the output says so.
    """
    settings = Settings()
    token = _token(settings)
    try:
        wanted = callback_url.url_to_set(settings, token, url)
        callback_url.check_url(wanted, token, force=force)
    except callback_url.PublicUrlNotConfigured:
        _fail("give the URL, or set PUBLIC_URL", EXIT_USAGE)
    except callback_url.UrlRefused as exc:
        _fail(exc.detail, EXIT_USAGE)
    expected = callback_url.expected_url(settings, token)
    try:
        done = _with_provider(
            settings,
            lambda client: callback_url.register(client, wanted, token, expected, force=force),
        )
    except callback_url.NotConfirmed:
        _fail("the provider reports a different URL after setting it", EXIT_PROVIDER)
    _report_set(done)


def _report_set(done: callback_url.CallbackUrl) -> None:
    """What was registered, what the provider has now, and whether it is PUBLIC_URL's."""
    # The operator's own terminal: the token is shown, as `callback-path` does.
    click.echo(f"registered: {done.provider_url}")
    click.echo(f"provider:   {done.provider_url} (read back after setting: confirmed)")
    if done.expected_url is None:
        click.echo("expected:   (PUBLIC_URL is not set)")
        click.echo("result:     registered; PUBLIC_URL is not set, so nothing to compare it with")
    elif done.matches:
        click.echo(f"expected:   {done.expected_url} (PUBLIC_URL + the callback path)")
        click.echo("result:     the provider has the expected URL")
    else:
        click.echo(f"expected:   {done.expected_url} (PUBLIC_URL + the callback path)")
        click.echo(
            "result:     registered, but NOT the expected URL: pushes now go to the URL "
            "above, and `callback-url` exits 1 until the expected one is set"
        )


# --- simulator ------------------------------------------------------------------------


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.pass_context
def simulator(ctx: click.Context) -> None:
    """Run a local TargetSMS stand-in (see --help): state.php, get_state.php, pushes."""
    from app.simulator import main as simulator_main

    simulator_main(ctx.args, prog="targetsms-receiver simulator")
