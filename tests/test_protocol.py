"""Parsing status documents and writing acknowledgements (no database, no HTTP)."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from app.models import TIME_RAW_LENGTH
from app.protocol import (
    DocumentError,
    IncomingState,
    ack_document,
    error_document,
    parse_document,
    parse_time,
    unique_ids,
)

MOSCOW = ZoneInfo("Europe/Moscow")
DIGEST_PUSH = b"""<?xml version="1.0" encoding="utf-8"?>
<request>
  <state id_sms="12345" time="2020-01-01 12:57:46">deliver</state>
  <state id_sms="12346" time="2020-01-01 12:57:46">not_deliver</state>
</request>"""
DIGEST_ACK = b"""<?xml version="1.0" encoding="utf-8" ?>
<response>
<id_sms>12345</id_sms>
<id_sms>12346</id_sms>
</response>"""


def parse(body: bytes, max_states: int = 100) -> list[tuple[str, str, str]]:
    return [state.key for state in parse_document(body, MOSCOW, max_states).states]


def test_digest_push_parses_and_its_ack_is_byte_for_byte() -> None:
    document = parse_document(DIGEST_PUSH, MOSCOW, 100)
    assert [s.key for s in document.states] == [
        ("12345", "deliver", "2020-01-01 12:57:46"),
        ("12346", "not_deliver", "2020-01-01 12:57:46"),
    ]
    assert document.states[0].status_at == datetime(2020, 1, 1, 9, 57, 46, tzinfo=UTC)
    assert ack_document(unique_ids(document.states)) == DIGEST_ACK


def test_response_root_and_unknown_attributes_are_accepted() -> None:
    body = b'<response><state id_sms="7" time="" extra="x" num_parts="2">read</state></response>'
    assert parse(body) == [("7", "read", "")]


@pytest.mark.parametrize(
    "encoded",
    [
        b'<request><state id_sms="1" time="">send</state></request>',
        b"\xef\xbb\xbf" + b'<request><state id_sms="1" time="">send</state></request>',
        '\ufeff<?xml version="1.0" encoding="UTF-16"?><request><state id_sms="1" time="">send'
        "</state></request>".encode("utf-16-le"),
        "\ufeff<request><state id_sms='1' time=''>send</state></request>".encode("utf-16-be"),
        '<?xml version="1.0" encoding="windows-1251"?><request><!-- отчёт -->'
        '<state id_sms="1" time="">send</state></request>'.encode("cp1251"),
    ],
    ids=["utf-8", "utf-8-bom", "utf-16-le-bom", "utf-16-be-bom", "windows-1251"],
)
def test_accepted_encodings(encoded: bytes) -> None:
    assert parse(encoded) == [("1", "send", "")]


@pytest.mark.parametrize("encoding", ["koi8-r", "iso-8859-1", "utf-32", "rot13", "utf-7", "bogus"])
def test_other_declared_encodings_are_refused(encoding: str) -> None:
    body = f'<?xml version="1.0" encoding="{encoding}"?><request/>'.encode()
    with pytest.raises(DocumentError, match="unsupported encoding"):
        parse(body)


@pytest.mark.parametrize(
    "body",
    [
        "<request/>".encode("utf-16-le"),
        "<request/>".encode("utf-16-be"),
        "\ufeff<request/>".encode("utf-32-le"),
        "\ufeff<request/>".encode("utf-32-be"),
    ],
    ids=["utf-16-le", "utf-16-be", "utf-32-le-bom", "utf-32-be-bom"],
)
def test_utf16_without_bom_and_utf32_are_refused(body: bytes) -> None:
    with pytest.raises(DocumentError, match=r"UTF-16 without|utf-32"):
        parse(body)


def test_utf8_bom_with_a_conflicting_declaration_is_refused() -> None:
    body = b'\xef\xbb\xbf<?xml version="1.0" encoding="windows-1251"?><request/>'
    with pytest.raises(DocumentError):
        parse(body)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "empty"),
        (b"   \n", "empty"),
        (b"<request>", "malformed"),
        (b"<request/>junk", "malformed"),
        (b"<request>\x00</request>", "malformed"),
        (b"<sms/>", "root element"),
        (b"<request><a><b><c/></b></a></request>", "nested deeper"),
        (b'<!DOCTYPE r SYSTEM "http://example.invalid/r.dtd"><request/>', "forbidden"),
        (
            b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaa"><!ENTITY b "&a;&a;&a;">]>'
            b"<request>&b;</request>",
            "forbidden",
        ),
        (
            b'<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><request>&x;</request>',
            "forbidden",
        ),
    ],
)
def test_bad_documents_say_what_is_wrong(body: bytes, reason: str) -> None:
    with pytest.raises(DocumentError, match=reason):
        parse(body)


def test_the_number_of_states_is_bounded() -> None:
    body = b"<request>" + b'<state id_sms="1" time="">send</state>' * 11 + b"</request>"
    assert len(parse(body, max_states=11)) == 11
    with pytest.raises(DocumentError, match="more than 10 states"):
        parse(body, max_states=10)


@pytest.mark.parametrize(
    "id_sms",
    [
        "１２",
        "1_2",
        "+12",
        " 12",
        "12 ",
        "٣",
        "-1",
        "1.0",
        "",
        "12345678901234567890",
        "1&lt;/id_sms&gt;&lt;x/&gt;",
    ],
)
def test_invalid_ids_are_skipped_and_the_rest_still_counts(id_sms: str) -> None:
    body = (
        f'<request><state id_sms="{id_sms}" time="">deliver</state>'
        '<state id_sms="42" time="">send</state></request>'
    ).encode()
    document = parse_document(body, MOSCOW, 100)
    assert [s.id_sms for s in document.states] == ["42"]
    assert document.skipped == 1


def test_nineteen_digits_is_the_longest_id() -> None:
    body = b'<request><state id_sms="9999999999999999999" time="">send</state></request>'
    assert parse(body) == [("9999999999999999999", "send", "")]


def test_states_without_a_usable_status_are_skipped() -> None:
    body = (
        '<request><state id_sms="1" time=""></state><state id_sms="2" time="">  </state>'
        f'<state id_sms="3" time="">{"x" * 65}</state><state id_sms="4">read</state></request>'
    ).encode()
    assert parse(body) == [("4", "read", "")]


def test_unreadable_time_is_kept_raw_and_read_as_unknown() -> None:
    body = b'<request><state id_sms="1" time="yesterday">deliver</state></request>'
    (state,) = parse_document(body, MOSCOW, 10).states
    assert (state.time_raw, state.status_at) == ("yesterday", None)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2020-01-01 12:57:46", datetime(2020, 1, 1, 9, 57, 46, tzinfo=UTC)),
        ("2010-07-01 12:00:00", datetime(2010, 7, 1, 8, 0, 0, tzinfo=UTC)),  # MSD, UTC+4
        ("", None),
        ("2020-02-30 00:00:00", None),
        ("2020-01-01T12:57:46", None),
        ("2020-01-01 12:57", None),
    ],
)
def test_provider_time_is_read_in_its_zone(raw: str, expected: datetime | None) -> None:
    assert parse_time(raw, MOSCOW) == expected


def test_another_configured_zone_is_honoured() -> None:
    assert parse_time("2020-01-01 12:00:00", ZoneInfo("Asia/Yekaterinburg")) == datetime(
        2020, 1, 1, 7, 0, tzinfo=UTC
    )


def test_ids_are_acknowledged_once_in_order_of_arrival() -> None:
    body = (
        b'<request><state id_sms="2" time="">send</state><state id_sms="1" time="">send</state>'
        b'<state id_sms="2" time="2020-01-01 00:00:00">deliver</state></request>'
    )
    assert unique_ids(parse_document(body, MOSCOW, 10).states) == ["2", "1"]


def test_error_document_escapes_its_text() -> None:
    assert error_document("bad <x> & co") == (
        b'<?xml version="1.0" encoding="utf-8" ?>\n'
        b"<response><error>bad &lt;x&gt; &amp; co</error></response>"
    )


REFUSED_BEHIND_PADDING = ["koi8-r", "iso-8859-5", "cp866", "cp1252", "us-ascii", "utf-16"]


@pytest.mark.parametrize("encoding", REFUSED_BEHIND_PADDING)
def test_the_whole_declaration_is_read_however_long(encoding: str) -> None:
    """Padding once pushed `encoding=` past a fixed window, and the document was read."""
    body = f'<?xml version="1.0"{" " * 250}encoding="{encoding}"?><request/>'.encode()
    with pytest.raises(DocumentError, match="unsupported encoding"):
        parse(body)


def test_padded_allowed_declarations_still_parse() -> None:
    body = f'<?xml version="1.0"{" " * 300}encoding="windows-1251"?>'.encode() + (
        '<request><state id_sms="1" time="">отправлено</state></request>'.encode("cp1251")
    )
    assert parse(body) == [("1", "отправлено", "")]


@pytest.mark.parametrize(
    "declaration",
    [b'<?xml version="1.0" encoding="koi8-r"', b'<?xml version="1.0" encoding="koi 8"?>'],
    ids=["never-ends", "unreadable-name"],
)
def test_a_declaration_we_cannot_read_is_refused(declaration: bytes) -> None:
    with pytest.raises(DocumentError):
        parse(declaration + b"<request/>")


def test_a_state_with_element_content_is_skipped_not_cut() -> None:
    body = (
        b'<request><state id_sms="1" time="">del<b>x</b>iver</state>'
        b'<state id_sms="2" time="">deliver</state></request>'
    )
    document = parse_document(body, MOSCOW, 10)
    assert ([s.key for s in document.states], document.skipped) == ([("2", "deliver", "")], 1)


def test_a_time_is_kept_whole_up_to_its_bound_and_past_it_the_state_is_skipped() -> None:
    at_bound, past = "x" * TIME_RAW_LENGTH, "x" * TIME_RAW_LENGTH + "y"
    body = (
        f'<request><state id_sms="1" time="{at_bound}">send</state>'
        f'<state id_sms="2" time="{past}">send</state></request>'
    ).encode()
    document = parse_document(body, MOSCOW, 10)
    assert ([s.key for s in document.states], document.skipped) == ([("1", "send", at_bound)], 1)


@pytest.mark.parametrize(
    ("raw", "zone"),
    [
        ("0001-01-01 00:00:00", "Europe/Moscow"),  # east of UTC: before datetime.min
        ("0001-01-01 13:59:59", "Etc/GMT-14"),
        ("9999-12-31 23:59:59", "Etc/GMT+12"),  # west of UTC: past datetime.max
    ],
)
def test_a_time_without_a_utc_equivalent_is_unknown(raw: str, zone: str) -> None:
    assert parse_time(raw, ZoneInfo(zone)) is None


def test_a_state_pickles_as_its_constructor_arguments() -> None:
    """How a batch crosses to SQLite's commit process (app/sqlite_commit.py)."""
    at = datetime(2024, 5, 1, 7, tzinfo=UTC)
    states = [IncomingState("1", "deliver", "t", at, 2, "0.5"), IncomingState("2", "x", "", None)]
    assert pickle.loads(pickle.dumps(states)) == states  # noqa: S301 (our own bytes)
    assert states[0].__reduce__() == (IncomingState, ("1", "deliver", "t", at, 2, "0.5"))
