"""TargetSMS status documents in, acknowledgements out. Pure functions.

A status push is `<request>` (or `<response>`, as resellers document it) with
`<state id_sms=".." time="..">STATUS</state>` children. We answer with the ids
we have committed. Everything here works on bytes and values: no database, no
HTTP.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from functools import lru_cache
from operator import attrgetter
from typing import Any, NoReturn
from xml.etree.ElementTree import ParseError
from xml.parsers import expat
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

from defusedxml import (
    DefusedXmlException,
    DTDForbidden,
    EntitiesForbidden,
    ExternalReferenceForbidden,
)

from app.models import STATUS_LENGTH, TIME_RAW_LENGTH

FINAL_STATUSES = frozenset({"not_deliver", "expired", "deliver", "partly_deliver"})

ROOT_TAGS = frozenset({"request", "response"})
MAX_DEPTH = 3  # <request><state/></request> is 2; one level of slack.

ID_SMS_PATTERN = r"[0-9]{1,19}"  # the provider's message id: 1 to 19 ASCII digits
ID_SMS = re.compile(ID_SMS_PATTERN)
ID_SMS_ANCHORED = f"^{ID_SMS_PATTERN}$"  # for pydantic and OpenAPI `pattern`
PROVIDER_TIME = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2}) ([0-9]{2}):([0-9]{2}):([0-9]{2})")

UTF8_BOM = b"\xef\xbb\xbf"
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
UTF32_BOMS = (b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")
XML_DECLARATION = re.compile(rb"<\?xml[ \t\r\n]")
DECLARED_ENCODING = re.compile(rb"""encoding\s*=\s*(["'])([A-Za-z0-9._-]*)\1""")
ALLOWED_DECLARED = {"utf-8": "utf-8", "utf8": "utf-8", "windows-1251": "cp1251", "cp1251": "cp1251"}

ACK_HEADER = '<?xml version="1.0" encoding="utf-8" ?>\n'


# What defusedxml and expat raise on a document they cannot read: odd declared
# encodings raise LookupError, ValueError or UnicodeError, not ParseError.
XML_ERRORS = (
    ParseError,
    expat.ExpatError,
    ValueError,
    LookupError,
    UnicodeError,
    DefusedXmlException,
)


class DocumentError(ValueError):
    """The document cannot be read; the message says why, for the sender."""


@dataclass(frozen=True, slots=True)
class IncomingState:
    id_sms: str
    status: str
    time_raw: str
    status_at: datetime | None
    num_parts: int | None = None
    price: str | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.id_sms, self.status, self.time_raw)

    def __reduce__(self) -> tuple[type[IncomingState], tuple[Any, ...]]:
        # Pickled as its constructor's arguments (to SQLite's commit process):
        # dataclasses' own pickling of a frozen slotted class calls fields()
        # on every object, and it was a quarter of the server's CPU under wrk
        # with 100-state documents.
        return (IncomingState, _STATE_FIELDS(self))


_STATE_FIELDS = attrgetter(*(field.name for field in fields(IncomingState)))


@dataclass(frozen=True, slots=True)
class ParsedDocument:
    states: list[IncomingState]
    skipped: int  # <state> elements not stored: see `build_state`, and element content


def is_final(status: str | None) -> bool:
    return status in FINAL_STATUSES


def check_encoding(body: bytes) -> None:
    """Allow UTF-8 (with or without BOM), UTF-16 with BOM, declared windows-1251."""
    if body.startswith(UTF32_BOMS):
        raise DocumentError("unsupported encoding 'utf-32': use UTF-8, UTF-16 or windows-1251")
    if body.startswith(UTF16_BOMS):
        return
    if b"\x00" in body[:2]:
        # expat would guess UTF-16 from the zero bytes; only a BOM may say so.
        raise DocumentError("UTF-16 without a byte order mark")
    head = body[len(UTF8_BOM) :] if body.startswith(UTF8_BOM) else body
    declaration = _declaration(head.lstrip())
    if declaration is None or b"encoding" not in declaration:
        return
    match = DECLARED_ENCODING.search(declaration)
    if match is None:
        raise DocumentError("unreadable encoding declaration")
    declared = match.group(2).decode("ascii").lower()
    allowed = ALLOWED_DECLARED.get(declared)
    if allowed is None or (allowed != "utf-8" and head is not body):
        raise DocumentError(f"unsupported encoding {declared!r}: use UTF-8, UTF-16 or windows-1251")


def _declaration(head: bytes) -> bytes | None:
    """The XML declaration whole, however long: expat reads it to its `?>`
    (padding before `encoding=` once hid a refused encoding from a fixed window)."""
    if not XML_DECLARATION.match(head):
        return None
    end = head.find(b"?>")
    if end < 0:
        raise DocumentError("malformed XML: the XML declaration never ends")
    return head[:end]


def parse_document(body: bytes, zone: ZoneInfo, max_states: int) -> ParsedDocument:
    with reading(body):
        return _parse(body, zone, max_states)


@contextmanager
def reading(body: bytes) -> Iterator[None]:
    """Refuse an empty body or a refused encoding, then turn whatever defusedxml
    or expat raise while reading it into a DocumentError that says why."""
    if not body.strip():
        raise DocumentError("empty document")
    check_encoding(body)
    try:
        yield
    except DocumentError:
        raise
    except XML_ERRORS as exc:
        raise DocumentError(_reading_error(exc)) from None


def _reading_error(exc: Exception) -> str:
    if isinstance(exc, DefusedXmlException):
        return f"forbidden XML construct: {type(exc).__name__}"
    if isinstance(exc, ParseError | expat.ExpatError):
        return f"malformed XML: {exc}"
    return f"unreadable document: {exc}"


def _parse(body: bytes, zone: ZoneInfo, max_states: int) -> ParsedDocument:
    reader = _StateReader(zone, max_states)
    parser = _expat_parser()
    parser.StartElementHandler = reader.start
    parser.EndElementHandler = reader.end
    parser.CharacterDataHandler = reader.data
    parser.Parse(body, True)
    return ParsedDocument(states=reader.states, skipped=reader.skipped)


def _expat_parser() -> expat.XMLParserType:
    """expat with defusedxml's refusals (a DTD of any kind, entity declarations,
    external references), raising defusedxml's own exceptions.

    defusedxml's parsers are the pure-Python ElementTree ones: setting one up
    took 50-200 us per document, half of a 1-state callback's time on SQLite
    (bench/RESULTS.md). Refusing the DTD at its start refuses every entity bomb
    and external entity, which need one; the other two handlers are a second line.
    """
    parser = expat.ParserCreate(namespace_separator="}")
    parser.buffer_text = True
    parser.StartDoctypeDeclHandler = _refuse_dtd
    parser.EntityDeclHandler = _refuse_entity
    parser.UnparsedEntityDeclHandler = _refuse_entity
    parser.ExternalEntityRefHandler = _refuse_external
    return parser


def _refuse_dtd(name: str, sysid: str | None, pubid: str | None, *_: object) -> NoReturn:
    raise DTDForbidden(name, sysid, pubid)


def _refuse_entity(name: str, *args: object) -> NoReturn:
    raise EntitiesForbidden(name, None, None, None, None, None)


def _refuse_external(
    context: str, base: str | None, sysid: str | None, pubid: str | None
) -> NoReturn:
    raise ExternalReferenceForbidden(context, base, sysid, pubid)


class _StateReader:
    """The states of one document, from expat's callbacks as it reads."""

    def __init__(self, zone: ZoneInfo, max_states: int) -> None:
        self.zone, self.max_states = zone, max_states
        self.states: list[IncomingState] = []
        self.skipped = self.depth = 0
        self.attrib: dict[str, str] | None = None  # of the <state> being read
        self.text: list[str] = []
        self.has_children = False

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise DocumentError(f"elements nested deeper than {MAX_DEPTH} levels")
        if self.depth == 1 and tag not in ROOT_TAGS:
            raise DocumentError(f"root element must be <request>, not <{tag}>")
        if self.depth == 2:
            self.attrib, self.text, self.has_children = (
                (attrib if tag == "state" else None),
                [],
                False,
            )
        elif self.depth == 3:
            self.has_children = True

    def data(self, text: str) -> None:
        if self.depth == 2:
            self.text.append(text)

    def end(self, tag: str) -> None:
        self.depth -= 1
        if self.depth == 1 and self.attrib is not None:
            self._state(self.attrib)
            self.attrib = None

    def _state(self, attrib: dict[str, str]) -> None:
        if len(self.states) + self.skipped >= self.max_states:
            raise DocumentError(f"more than {self.max_states} states in one document")
        # Element content (`del<b>x</b>iver`) would leave only the text before
        # the child as the status: such a state is not stored.
        text = "".join(self.text)
        state = None if self.has_children else read_state(attrib, text, self.zone)
        if state is None:
            self.skipped += 1
        else:
            self.states.append(state)


def read_state(attrib: dict[str, str], text: str | None, zone: ZoneInfo) -> IncomingState | None:
    """One callback `<state>` (its attributes and text); None when it cannot be stored."""
    status = (text or "").strip()
    return build_state(attrib.get("id_sms", ""), status, attrib.get("time", "").strip(), zone)


def build_state(
    id_sms: str,
    status: str,
    time_raw: str,
    zone: ZoneInfo,
    *,
    num_parts: int | None = None,
    price: str | None = None,
) -> IncomingState | None:
    """A state as callbacks and polls bring it; None when it has no usable id or
    status, or a time longer than TIME_RAW_LENGTH (kept whole or not at all)."""
    if not ID_SMS.fullmatch(id_sms) or not valid_status(status):
        return None
    if len(time_raw) > TIME_RAW_LENGTH:
        return None
    return IncomingState(
        id_sms=id_sms,
        status=status,
        time_raw=time_raw,
        status_at=parse_time(time_raw, zone),
        num_parts=num_parts,
        price=price,
    )


def valid_status(status: str) -> bool:
    """A status we store: unknown ones are kept (the platform also has `read`),
    so anything short and printable counts; empty or control characters do not."""
    return 0 < len(status) <= STATUS_LENGTH and status.isprintable()


@lru_cache(maxsize=4096)  # a batch's states often share their time; strptime was 20% of a parse
def parse_time(raw: str, zone: ZoneInfo) -> datetime | None:
    """The provider's wall-clock string in `zone`, as UTC; None if it cannot be
    read, or has no UTC equivalent (year 1 or 9999 pushed past the ends of
    `datetime` by the zone's offset)."""
    match = PROVIDER_TIME.fullmatch(raw)
    if match is None:
        return None
    try:
        year, month, day, hour, minute, second = (int(field) for field in match.groups())
        local = datetime(year, month, day, hour, minute, second, tzinfo=zone)
        return local.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def ack_document(ids: list[str]) -> bytes:
    lines = "".join(f"<id_sms>{id_sms}</id_sms>\n" for id_sms in ids)
    return f"{ACK_HEADER}<response>\n{lines}</response>".encode()


def error_document(message: str) -> bytes:
    return f"{ACK_HEADER}<response><error>{escape(message)}</error></response>".encode()


def unique_ids(states: list[IncomingState]) -> list[str]:
    """The ids to acknowledge, once each, in the order they came."""
    return list(dict.fromkeys(state.id_sms for state in states))
