"""Messages: search and filters over the read API's own query, CSV export, one message's story."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query
from sqlalchemy import Connection, select
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from app import cursors
from app.api.errors import ApiError
from app.api.messages import SUMMARY_COLUMNS, MessageFilter, history, read_page, summary
from app.models import STATUS_LENGTH, Document, Event, Message, MessageContext
from app.ui.i18n import N_, STATUS_MEANINGS
from app.ui.render import utc_time
from app.ui.state import SignedIn, View

router = APIRouter(prefix="/ui")

PAGE_SIZE = 50
CSV_BATCH = 1000
MAX_IDS = 1000
ID_SMS = re.compile(r"[0-9]{1,19}")
SEPARATORS = re.compile(r"[\s,;]+")
SOURCES = ("callback", "poll")
RAW_SHOWN_CHARS = 20_000
# Spreadsheets run a cell that starts with one of these as a formula.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class FilterError(ValueError):
    """A filter the user typed cannot be used; the message says which (translated)."""


@dataclass(frozen=True, slots=True)
class Search:
    """The filter form as typed, and what it means."""

    form: dict[str, Any]
    where: MessageFilter
    after: int


def _parse(params: dict[str, Any], zone: ZoneInfo) -> Search:
    ids = tuple(part for part in SEPARATORS.split(params["ids"]) if part)
    if len(ids) > MAX_IDS or not all(ID_SMS.fullmatch(i) for i in ids):
        raise FilterError(
            N_("Ids are 1 to 19 digits, at most 1,000, separated by spaces or commas.")
        )
    statuses = tuple(s for s in params["status"] if s)
    if not all(len(s) <= STATUS_LENGTH and s.isprintable() for s in statuses):
        raise FilterError(N_("A status is 1 to 64 printable characters."))
    if params["source"] and params["source"] not in SOURCES:
        raise FilterError(N_("The source is callback or poll."))
    try:
        after = cursors.decode(cursors.MESSAGES, params["cursor"]) if params["cursor"] else 0
    except ApiError:
        raise FilterError(N_("That page link is not valid any more; start again.")) from None
    where = MessageFilter(
        status=statuses,
        final=_yes_no(params["final"]),
        updated_after=_local(params["since"], zone),
        updated_before=_local(params["until"], zone),
        conflict=_yes_no(params["conflict"]),
        source=params["source"] or None,
        ids=ids,
    )
    return Search(params, where, after)


def _yes_no(value: str) -> bool | None:
    return {"yes": True, "no": False}.get(value)


def _local(value: str, zone: ZoneInfo) -> datetime | None:
    """A `datetime-local` value (no offset), read in the zone the times are shown in."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise FilterError(N_("Times are YYYY-MM-DDTHH:MM.")) from None
    if moment.tzinfo is not None:
        raise FilterError(N_("Times are YYYY-MM-DDTHH:MM."))
    return moment.replace(tzinfo=zone)


Text = Annotated[str, Query(max_length=40_000)]
Short = Annotated[str, Query(max_length=100)]
Statuses = Annotated[list[str] | None, Query(max_length=20)]


def filter_form(
    ids: Text = "",
    status: Statuses = None,
    final: Short = "",
    conflict: Short = "",
    source: Short = "",
    since: Short = "",
    until: Short = "",
    cursor: Short = "",
) -> dict[str, Any]:
    """The filter form's fields as typed (query parameters of the page and the CSV)."""
    return {
        "ids": ids,
        "status": status or [],
        "final": final,
        "conflict": conflict,
        "source": source,
        "since": since,
        "until": until,
        "cursor": cursor,
    }


FilterForm = Annotated[dict[str, Any], Depends(filter_form)]


@router.get("/messages")
async def messages_page(view: SignedIn, params: FilterForm) -> Response:
    context: dict[str, Any] = {
        "form": params,
        "statuses": tuple(STATUS_MEANINGS),
        "rows": [],
        "next_url": None,
        "csv_url": None,
        "error": None,
    }
    try:
        search = _parse(params, view.zone)
    except FilterError as exc:
        return view.page("messages.html", 422, **context | {"error": str(exc)})

    def read() -> tuple[list[dict[str, Any]], int | None]:
        with view.runtime.engine.connect() as conn:
            page, more = read_page(conn, search.where, search.after, PAGE_SIZE)
        return [summary(r._mapping) for r in page], page[-1].id if more else None

    rows, last = await run_in_threadpool(read)
    query = {k: v for k, v in params.items() if v and k != "cursor"}
    if last is not None:
        query_next = query | {"cursor": cursors.encode(cursors.MESSAGES, last)}
        context["next_url"] = "/ui/messages?" + urlencode(query_next, doseq=True)
    context["csv_url"] = "/ui/messages.csv?" + urlencode(query, doseq=True)
    return view.page("messages.html", **context | {"rows": rows})


@router.get("/messages.csv")
async def messages_csv(view: SignedIn, params: FilterForm) -> Response:
    """Every message matching the filter (the page's cursor, if any, is ignored)."""
    try:
        search = _parse(params | {"cursor": ""}, view.zone)
    except FilterError as exc:
        return Response(str(exc), status_code=422, media_type="text/plain")
    headers = {"Content-Disposition": 'attachment; filename="messages.csv"'}
    return StreamingResponse(_csv_rows(view, search.where), media_type="text/csv", headers=headers)


CSV_COLUMNS = [column.key for column in SUMMARY_COLUMNS]


def _csv_rows(view: View, where: MessageFilter) -> Iterator[str]:
    """Every matching message, a batch at a time (Starlette runs this in its threadpool)."""
    yield _csv_line(CSV_COLUMNS)
    after, more = 0, True
    with view.runtime.engine.connect() as conn:
        while more:
            page, more = read_page(conn, where, after, CSV_BATCH)
            for row in page:
                yield _csv_line([_cell(row._mapping[c]) for c in CSV_COLUMNS])
            after = page[-1].id if page else after
            conn.rollback()  # end the read transaction between batches


def _csv_line(values: list[str]) -> str:
    out = io.StringIO()
    csv.writer(out).writerow(values)
    return out.getvalue()


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return utc_time(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


@router.get("/messages/{id_sms}")
async def message_page(view: SignedIn, id_sms: str) -> Response:
    if not ID_SMS.fullmatch(id_sms):
        return view.page("message.html", 404, message=None, id_sms=id_sms)

    def read() -> dict[str, Any] | None:
        with view.runtime.engine.connect() as conn:
            row = conn.execute(
                select(*SUMMARY_COLUMNS, Message.last_polled_at).where(Message.id_sms == id_sms)
            ).first()
            if row is None:
                return None
            found = summary(row._mapping) | {"last_polled_at": row.last_polled_at}
            found["events"] = history(conn, id_sms)
            found["context"] = _context(conn, id_sms)
            found["documents"] = _documents(conn, id_sms) if view.session.admin else []
            return found

    message = await run_in_threadpool(read)
    if message is None:
        return view.page("message.html", 404, message=None, id_sms=id_sms)
    return view.page("message.html", message=message, id_sms=id_sms)


def _context(conn: Connection, id_sms: str) -> dict[str, Any] | None:
    """What the provider's statistics said about it (reconciliation), if they listed it."""
    row = conn.execute(
        select(MessageContext.__table__).where(MessageContext.id_sms == id_sms)
    ).first()
    return dict(row._mapping) if row is not None else None


def _documents(conn: Connection, id_sms: str) -> list[dict[str, Any]]:
    """The raw callback documents that carried this message's states (admins only)."""
    carried = select(Event.document_id).where(
        Event.id_sms == id_sms, Event.document_id.is_not(None)
    )
    query = (
        select(
            Document.id, Document.received_at, Document.remote_addr, Document.outcome, Document.body
        )
        .where(Document.id.in_(carried.scalar_subquery()))
        .order_by(Document.id)
    )
    return [dict(row._mapping) | {"text": _readable(row.body)} for row in conn.execute(query)]


def _readable(body: bytes) -> str:
    """The document as text, for reading: its own encoding where it can be told."""
    if body.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = body.decode("utf-16", errors="replace")
    else:
        try:
            text = body.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = body.decode("cp1251", errors="replace")
    return text[:RAW_SHOWN_CHARS]
