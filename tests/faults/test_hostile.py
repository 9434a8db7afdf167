"""Hostile input at volume: generated documents against a live server and the parser.

Hypothesis makes documents of three kinds:

- well-formed ones (in every accepted encoding and wrapping) mixing valid and
  invalid states, for which the exact acknowledgement is known: the ids of
  the valid states, once each, in order;
- hostile ones (DTDs, entity bombs, external entities, deep nesting, refused
  encodings, a wrong root), which must be refused with 400 and no id;
- junk (random bytes, truncations, NULs, corrupted documents), which may be
  anything but a 5xx and whose acknowledged ids must all be stored;
- and, a few times each, large documents: just under the limits (answered in
  full) and over them (413).

All of them go, over keep-alive connections, to a real `serve` process whose
memory is watched. The parser is also fuzzed directly: it may only ever raise
`DocumentError`.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr
from zoneinfo import ZoneInfo

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from app.config import Settings
from app.protocol import DocumentError, parse_document
from tests.conftest import CALLBACK_PATH, rows
from tests.faults.harness import FULL, ServerProcess, acked_ids

# Per database. The bounded form (CI) is smaller: 2 x 2,000 documents posted, 3,000 parsed.
DOCUMENTS = 20_000 if FULL else 2_000
WARM_UP_DOCUMENTS = 500
PARSER_EXAMPLES = 50_000 if FULL else 3_000
MEMORY_GROWTH_LIMIT = 64 * 1024 * 1024
VALID_ID = re.compile(r"[0-9]{1,19}")

# Characters XML 1.0 allows, so that a well-formed document stays well-formed.
xml_text = st.text(st.characters(exclude_categories=("Cs", "Cc", "Cn")), max_size=30)
# Cheap strategies first: generating documents is most of this test's time.
valid_ids = st.integers(0, 10**19 - 1).map(str) | st.sampled_from(["0", "007", "9" * 19])
odd_ids = st.sampled_from(
    ["", " 12", "12 ", "+12", "-12", "1_2", "１２", "٣٤", "12a", "0x1F", "1.5", "1" * 20, "9" * 64]
) | xml_text.filter(lambda text: not VALID_ID.fullmatch(text))
valid_statuses = st.sampled_from(
    ["send", "deliver", "not_deliver", "expired", "partly_deliver", "read", " deliver ", "x" * 64]
) | st.text(st.characters(categories=("L", "N", "P")), min_size=1, max_size=64)
odd_statuses = st.sampled_from(["", "   ", "x" * 65, "a\tb", "\n"])
times = (
    st.sampled_from(["", "2024-05-01 10:00:00", "2024-02-30 10:00:00", "yesterday", " "]) | xml_text
)


@dataclass(frozen=True)
class Case:
    body: bytes
    status: int | None  # the answer required; None for junk: 200 or 400
    acks: tuple[str, ...] = ()  # the exact acknowledgement required (with a status)


HOSTILE = [
    b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">'
    b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;">]>'
    b'<request><state id_sms="1" time="">&c;</state></request>',
    b'<!DOCTYPE request [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    b'<request><state id_sms="1" time="">&x;</state></request>',
    b'<!DOCTYPE request SYSTEM "http://127.0.0.1:9/evil.dtd"><request></request>',
    b'<!DOCTYPE request [<!ENTITY % p SYSTEM "http://127.0.0.1:9/p">%p;]><request/>',
    b'<!DOCTYPE request><request><state id_sms="1" time="">send</state></request>',
    b'<request><state id_sms="1" time=""><a><b>deliver</b></a></state></request>',
    b"<request>" + b"<a>" * 5000 + b"</a>" * 5000 + b"</request>",
    b'<requests><state id_sms="1" time="">send</state></requests>',
    b'<?xml version="1.0" encoding="utf-7"?><request/>',
    b'<?xml version="1.0" encoding="shift_jis"?><request/>',
    b'<?xml version="1.0" encoding="rot13"?><request/>',
    b'<?xml version="1.0" encoding="idna"?><request/>',
    b"\xff\xfe\x00\x00<\x00\x00\x00r\x00\x00\x00/\x00\x00\x00>\x00\x00\x00",
    "<request/>".encode("utf-16-le"),
    b"",
    b"   \n",
]
# Large but allowed (under MAX_BODY_BYTES and MAX_STATES_PER_DOCUMENT), and too large.
MANY_STATES = "".join(f'<state id_sms="{80_000_000 + n}" time="">send</state>' for n in range(5000))
LARGE = [
    Case(b"<request>" + b"x" * 900_000 + b"</request>", 200),
    Case(
        f"<request>{MANY_STATES}</request>".encode(),
        200,
        tuple(str(80_000_000 + n) for n in range(5000)),
    ),
    Case(b"<request>" + b" " * (1024 * 1024) + b"</request>", 413),
    Case(b"<request>" + b"<x/>" * 300_000 + b"</request>", 413),
]


@st.composite
def state_elements(draw: st.DrawFn) -> tuple[str, str | None]:
    """One `<state>`, and its id when it is valid (so must be acknowledged)."""
    valid = draw(st.booleans())
    id_sms = draw(valid_ids if valid or draw(st.booleans()) else odd_ids)
    status = draw(valid_statuses if valid else odd_statuses)
    time = draw(times)
    element = f"<state id_sms={quoteattr(id_sms)} time={quoteattr(time)}>{escape(status)}</state>"
    return element, id_sms if valid else None


@st.composite
def well_formed(draw: st.DrawFn) -> Case:
    states = draw(st.lists(state_elements(), max_size=8))
    fillers = draw(st.sampled_from(["", "<!-- note -->", "<other a='1'/>", "\n  ", "<?pi x?>"]))
    root = draw(st.sampled_from(["request", "response"]))
    inner = fillers.join(element for element, _ in states)
    text = f"<{root}>{inner}</{root}>"
    encoding = draw(st.sampled_from(["utf-8", "utf-8-bom", "bare", "utf-16", "windows-1251"]))
    body = _encode(text, encoding)
    expected = dict.fromkeys(id_sms for _, id_sms in states if id_sms is not None)
    return Case(body, 200, tuple(expected))


def _encode(text: str, encoding: str) -> bytes:
    declaration = '<?xml version="1.0" encoding="{}"?>'
    if encoding == "windows-1251":
        try:
            return (declaration.format("windows-1251") + text).encode("cp1251")
        except UnicodeEncodeError:
            encoding = "utf-8"
    if encoding == "utf-16":
        return (declaration.format("utf-16") + text).encode("utf-16")
    if encoding == "utf-8-bom":
        return b"\xef\xbb\xbf" + text.encode()
    if encoding == "bare":
        return text.encode()
    return (declaration.format("utf-8") + text).encode()


@st.composite
def junk(draw: st.DrawFn) -> Case:
    base = draw(well_formed()).body
    kind = draw(st.sampled_from(["bytes", "truncated", "nul", "flipped", "doubled"]))
    if kind == "bytes":
        return Case(draw(st.binary(max_size=300)), None)
    cut = draw(st.integers(0, max(0, len(base) - 1)))
    if kind == "truncated":
        body = base[:cut]
    elif kind == "nul":
        body = base[:cut] + b"\x00" + base[cut:]
    elif kind == "flipped":
        body = base[:cut] + bytes([draw(st.integers(0, 255))]) + base[cut + 1 :]
    else:
        body = base + base
    return Case(body, None)


cases = st.one_of(
    well_formed(),
    well_formed(),
    st.sampled_from(HOSTILE).map(lambda body: Case(body, 400)),
    junk(),
)


class Results:
    """What the server answered, gathered from the sending threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.acked: set[str] = set()
        self.problems: list[str] = []
        self.answers: Counter[int] = Counter()

    def record(self, status: int, acked: list[str], problem: str | None) -> None:
        with self.lock:
            self.answers[status] += 1
            self.acked.update(acked)
            if problem is not None:
                self.problems.append(problem)


def check(client: httpx.Client, case: Case, results: Results) -> None:
    try:
        response = client.post(CALLBACK_PATH, content=case.body)
    except httpx.HTTPError as exc:
        results.record(0, [], f"no answer ({exc!r}) for {case.body[:120]!r}")
        return
    status, acked = response.status_code, acked_ids(response.content)
    results.record(status, acked, problem(case, status, acked))


def problem(case: Case, status: int, acked: list[str]) -> str | None:
    if case.status is not None and (status, tuple(acked)) != (case.status, case.acks):
        return f"{status} {acked}, not {case.status} {list(case.acks)}, for {case.body[:200]!r}"
    if case.status is None and (status not in (200, 400) or (status == 400 and acked)):
        return f"{status} {acked} for junk {case.body[:120]!r}"
    return None


def post_generated(client: httpx.Client, documents: int, results: Results) -> None:
    """Post `documents` generated cases from 8 threads while hypothesis makes more."""
    inflight = threading.BoundedSemaphore(32)
    futures: list[Future[None]] = []
    with ThreadPoolExecutor(8) as pool:

        @settings_for(documents)
        @given(cases)
        def post_one(case: Case) -> None:
            inflight.acquire()
            future = pool.submit(check, client, case, results)
            future.add_done_callback(lambda _: inflight.release())
            futures.append(future)

        post_one()
    for future in futures:
        future.result()


@pytest.mark.slow
def test_generated_documents_never_500_and_every_ack_is_stored(
    settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    results = Results()
    env = {"DATABASE_URL": settings.database_url}
    with (
        ServerProcess(tmp_path, env) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        post_generated(client, WARM_UP_DOCUMENTS, results)  # the baseline: a running service
        rss_before = server.rss_bytes()
        post_generated(client, DOCUMENTS, results)
        for case in LARGE * 3:
            check(client, case, results)
        rss_after = server.rss_bytes()

    stored = {str(row[0]) for row in rows(engine, "SELECT DISTINCT id_sms FROM events")}
    documents = sum(results.answers.values())
    print(f"{documents} documents: {dict(results.answers)}; RSS {rss_before} -> {rss_after}")
    assert documents >= DOCUMENTS
    assert results.problems == []
    assert results.acked - stored == set(), "acknowledged but not stored"
    assert results.answers[200] > documents // 3
    assert rss_after - rss_before < MEMORY_GROWTH_LIMIT


def settings_for(examples: int) -> hypothesis_settings:
    return hypothesis_settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


ZONE = ZoneInfo("Europe/Moscow")


@settings_for(PARSER_EXAMPLES)
@given(st.one_of(st.binary(max_size=2000), cases.map(lambda case: case.body)))
def test_the_parser_only_ever_raises_document_error(body: bytes) -> None:
    try:
        parsed = parse_document(body, ZONE, max_states=50)
    except DocumentError:
        return
    for state in parsed.states:
        assert VALID_ID.fullmatch(state.id_sms)
        assert 0 < len(state.status) <= 64
