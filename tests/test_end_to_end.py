"""The whole loop over real HTTP: register the URL, track ids, pushes (some lost), the poller.

The simulator plays the provider and pushes to our real server; the poller is
the real `poll --once` command; the read API shows the outcome.
"""

from __future__ import annotations

import httpx

from app.config import Settings
from app.simulator import SimulatorServer, SimulatorState
from tests.conftest import CALLBACK_PATH, LiveServer
from tests.sim_helpers import ADMIN, LOGIN, PASSWORD, READ, run_cli, with_provider

FINALS = ("deliver", "not_deliver", "expired", "partly_deliver")


def send_answer(ids: list[str]) -> bytes:
    sent = "".join(
        f'<information number_sms="{n}" id_sms="{i}" parts="2">send</information>'
        for n, i in enumerate(ids, start=1)
    )
    failed = '<information number_sms="99" parts="1">Недостаточно средств.</information>'
    return f'<?xml version="1.0" encoding="utf-8"?><response>{sent}{failed}</response>'.encode()


def test_lost_callbacks_are_filled_in_by_the_poller(settings: Settings) -> None:
    state = SimulatorState(LOGIN, PASSWORD, retry_delay=0.05, push_batch_size=7)
    with SimulatorServer(state) as sim:
        configured = with_provider(settings, sim, poll_after_seconds=0)
        with LiveServer(configured) as live, httpx.Client(base_url=live.url, timeout=30) as api:
            ours = live.url + CALLBACK_PATH
            registered = api.put(
                "/api/v1/admin/callback-url", json={"url": ours, "force": True}, headers=ADMIN
            )
            assert registered.status_code == 200, registered.text
            assert state.callback_url == ours

            ids = state.create(30, num_parts=2, price="1.15")
            tracked = api.post("/api/v1/messages", content=send_answer(ids), headers=READ)
            assert tracked.status_code == 201
            assert tracked.json()["tracked"] == ids
            assert tracked.json()["failed"] == [
                {"number_sms": "99", "error": "Недостаточно средств."}
            ]

            lost = ids[::3]
            for id_sms in lost:
                state.lose(id_sms)
            for n, id_sms in enumerate(ids):
                state.advance(id_sms, FINALS[n % 4])
            assert state.wait_settled(20)
            assert {s.id_sms for s in state.lost} == set(lost)
            assert {s.id_sms for s in state.acknowledged} == set(ids) - set(lost)

            before = [api.get(f"/api/v1/messages/{i}", headers=READ).json() for i in ids]
            assert [m["final"] for m in before] == [i not in lost for i in ids]
            assert all(m["status"] is None for m in before if m["id_sms"] in lost)

            polled = run_cli(configured, "poll", "--once")
            assert polled.returncode == 0, polled.stderr
            assert PASSWORD not in polled.stdout + polled.stderr

            after = [api.get(f"/api/v1/messages/{i}", headers=READ).json() for i in ids]
            assert [m["status"] for m in after] == [FINALS[n % 4] for n in range(30)]
            assert all(m["final"] and not m["given_up"] for m in after)
            assert all(m["num_parts"] == 2 for m in after)
            by_source = {m["id_sms"]: m["source"] for m in after}
            assert {i for i, source in by_source.items() if source == "poll"} == set(lost)
            # Only the messages without a final status were asked about.
            asked = {i for request in state.state_requests for i in request}
            assert asked == set(lost)
