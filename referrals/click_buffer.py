"""The click buffer: a Redis stream the redirect appends to, flushed into Postgres in batches.

Hot path (``record_click_if_linked``): one Lua script reads the link's cache entry and, when it
is a redirectable link, XADDs the click, in a single round trip. The stream entry has one field,
``c``: ``<tenant>:<link>:<program>:<participant>:<channel>`` (copied from the cache entry), then
the code, visitor id, IP, user agent, referer and the request's query string, separated by
``\\x1f``. The entry id (Redis server time, ms) is the click's time and, per tenant, its unique key.

Flush (``clicks_flush``): a consumer group reads entries (first those a dead consumer left
unacknowledged for longer than CLICK_FLUSH_CLAIM_IDLE_MS, via XAUTOCLAIM; then new ones via
XREADGROUP), COPYs each batch into a temporary table and inserts it with
``ON CONFLICT (tenant_id, stream_id) DO NOTHING`` in one transaction, and XACKs only after the
commit; then trims what every reader has acknowledged. A flush that dies before the commit
leaves its entries pending (retried); one that dies after the commit but before the ack leaves
them pending too, and the retry's insert skips the rows already there. No click is lost and none
is written twice.

Tenancy: the flush takes no tenant (or any other) input from outside. Each row's tenant,
program and participant are taken from the referral link row it names, joined on the link id
*and* the tenant id carried in the entry, so an entry can only ever produce a click of the
tenant that owns its link.
"""

from __future__ import annotations

import io
import ipaddress
import json
import logging
import os
import queue
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote_plus

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from redis.exceptions import ResponseError

from referral_platform.hooks import hooks
from referral_platform.tenancy import rls

from . import click_spool, hot_redis
from .bots import is_bot_user_agent
from .models import Click, ReferralLink

logger = logging.getLogger(__name__)

GROUP = "click-flush"
UNIQUE_VIOLATION = "23505"
SEPARATOR = "\x1f"
MAX_USER_AGENT = 512
MAX_REFERER = 1024
MAX_QUERY = 2048
UTM_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "utm_id")

# KEYS[1] link cache entry, KEYS[2] click stream; ARGV[1] the click (everything after the ids).
# Returns false (not cached), the entry (cached but not a link: nothing recorded) or
# {entry, stream id}. Lua 5.1 has no \\x escapes: "\\31" is the unit separator.
_RECORD_SCRIPT = """
local entry = redis.call('GET', KEYS[1])
if not entry then return false end
local first = string.byte(entry, 1)
if first < 48 or first > 57 then return entry end
local newline = string.find(entry, '\\n', 1, true)
local id = redis.call('XADD', KEYS[2], '*', 'c', string.sub(entry, 1, newline - 1) .. '\\31' .. ARGV[1])
return {entry, id}
"""

_RECORD_SHA = hot_redis.script_sha(_RECORD_SCRIPT)


def _clean(value: str, limit: int) -> str:
    if SEPARATOR in value or "\x00" in value:
        value = value.replace(SEPARATOR, " ").replace("\x00", "")
    return value[:limit]


def click_payload(*, code: str, visitor_id: str, ip: str, user_agent: str, referer: str, query: str) -> str:
    """The click fields that follow the link ids in a stream entry."""
    return SEPARATOR.join(
        (
            code,
            visitor_id,
            _clean(ip, 64),
            _clean(user_agent, MAX_USER_AGENT),
            _clean(referer, MAX_REFERER),
            _clean(query, MAX_QUERY),
        )
    )


def record_click_if_linked(*, code_key: str, payload: str) -> tuple[bytes | None, bytes | None]:
    """(cache entry or None, stream id or None) in one round trip: the click is appended only
    when the cached entry is a redirectable link."""
    result = hot_redis.run_script(_RECORD_SCRIPT, _RECORD_SHA, [code_key, hot_redis.click_stream_key()], [payload])
    if result is None:
        return None, None
    if isinstance(result, list):
        return result[0], result[1]
    return result, None


def record_click(*, ids: bytes, payload: str) -> bytes:
    """Append a click for a link whose entry was just loaded from Postgres (cold path)."""
    return hot_redis.client().xadd(hot_redis.click_stream_key(), {"c": ids + SEPARATOR.encode() + payload.encode()})


def forget_click(stream_id: bytes) -> None:
    hot_redis.client().xdel(hot_redis.click_stream_key(), stream_id)


def click_record_direct(
    *, link: ReferralLink, visitor_id: str, ip: str, user_agent: str, referer: str, query: str
) -> Click:
    """Write one click straight to Postgres: the redirect's fallback while Redis is unavailable.

    Its ``stream_id`` ("pg-" + random) can never collide with a stream entry id.
    """
    user_agent = _clean(user_agent, MAX_USER_AGENT)
    click = Click.objects.create(
        tenant_id=link.tenant_id,
        link=link,
        program_id=link.program_id,
        participant_id=link.participant_id,
        stream_id=f"pg-{uuid.uuid4().hex}",
        visitor_id=visitor_id,
        ip=_valid_ip(ip) or None,
        user_agent=user_agent,
        referer=_clean(referer, MAX_REFERER),
        channel=link.channel,
        utm=json.loads(_utm(_clean(query, MAX_QUERY))),
        is_bot=is_bot_user_agent(user_agent),
        occurred_at=timezone.now(),
    )
    hooks.clicks_flushed(click_ids=[click.pk])
    return click


# --- flush -----------------------------------------------------------------------------------


@dataclass
class FlushResult:
    entries: int = 0  # stream entries (one click each, or a spooled batch of up to click_spool.SHIP_CHUNK)
    read: int = 0  # clicks
    written: int = 0
    bots: int = 0  # entries read that came from known bots (stored flagged, never counted)
    skipped: int = 0  # already written (a retried batch) or the link no longer exists
    malformed: int = 0
    batches: int = 0
    seconds: float = 0.0

    def add(self, other: FlushResult) -> None:
        for name in ("entries", "read", "written", "bots", "skipped", "malformed", "batches"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


# (entry id, [field, value, ...]) as Redis sends it.
Entry = tuple[bytes, list]


def ensure_group(client=None) -> None:
    client = client or hot_redis.client()
    try:
        # From the start of the stream ("0"), so entries appended before the group existed count.
        client.xgroup_create(hot_redis.click_stream_key(), GROUP, id="0", mkstream=True)
    except ResponseError as error:
        if "BUSYGROUP" not in str(error):
            raise


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class BatchReader:
    """Yields batches for one consumer: first entries abandoned by dead consumers, then new ones."""

    def __init__(self, *, consumer: str, batch_size: int, claim_idle_ms: int) -> None:
        self.client = hot_redis.client()
        self.stream = hot_redis.click_stream_key()
        self.consumer = consumer
        self.batch_size = batch_size
        self.claim_idle_ms = claim_idle_ms
        self.count = batch_size  # entries per read: adapted to hold about batch_size clicks (adapt())
        self._claim_cursor: bytes | str | None = "0-0"
        ensure_group(self.client)

    def adapt(self, entries: int, clicks: int) -> None:
        """Size the next read to hold about ``batch_size`` clicks: an entry of the redirect's round trip holds
        one, a spooled batch up to ``click_spool.SHIP_CHUNK``."""
        if entries and clicks:
            self.count = max(1, min(self.batch_size, self.batch_size * entries // clicks))

    def _raw(self, *command):
        """A command answered as hiredis parsed it (no per-entry dicts: 5,000 entries a batch)."""
        pool = self.client.connection_pool
        connection = pool.get_connection()
        try:
            connection.send_command(*command)
            return connection.read_response()
        except BaseException:
            connection.disconnect()
            raise
        finally:
            pool.release(connection)

    def next_batch(self) -> list[Entry]:
        while self._claim_cursor is not None:
            cursor, claimed, *_deleted = self._raw(
                "XAUTOCLAIM",
                self.stream,
                GROUP,
                self.consumer,
                self.claim_idle_ms,
                self._claim_cursor,
                "COUNT",
                self.count,
            )
            self._claim_cursor = None if cursor == b"0-0" else cursor
            # Redis 6.2 still lists entries trimmed from under a dead consumer (without fields):
            # nothing can be written for them, so they are only acknowledged.
            gone = [entry_id for entry_id, fields in claimed if fields is None]
            if gone:
                self.client.xack(self.stream, GROUP, *gone)
            claimed = [(entry_id, fields) for entry_id, fields in claimed if fields is not None]
            if claimed:
                return claimed
        reply = self._raw("XREADGROUP", "GROUP", GROUP, self.consumer, "COUNT", self.count, "STREAMS", self.stream, ">")
        if not reply:
            return []
        # RESP3 answers a map {stream: entries}, RESP2 a list of [stream, entries] pairs.
        return next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1]

    def ack(self, entries: list[Entry]) -> None:
        if entries:
            self._raw("XACK", self.stream, GROUP, *[entry_id for entry_id, _ in entries])

    def trim(self) -> None:
        """Remove entries every reader has acknowledged (none pending, none undelivered)."""
        # Order matters: last-delivered first, pending second, so an entry delivered in between
        # shows up as pending and is kept.
        groups = self.client.xinfo_groups(self.stream)
        ours = next((g for g in groups if _text(g["name"]) == GROUP), None)
        if ours is None:
            return
        ms, seq = _text(ours["last-delivered-id"]).split("-")
        keep_from = (int(ms), int(seq) + 1)
        pending = self.client.xpending(self.stream, GROUP)
        if pending["pending"]:
            ms, seq = _text(pending["min"]).split("-")
            keep_from = min(keep_from, (int(ms), int(seq)))
        self.client.xtrim(self.stream, minid=f"{keep_from[0]}-{keep_from[1]}", approximate=False)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


_TEMP_TABLE = """
CREATE TEMPORARY TABLE IF NOT EXISTS click_flush_in (
    tenant_id bigint, link_id bigint, stream_id text, visitor_id text, ip inet,
    user_agent text, referer text, utm jsonb, is_bot boolean, occurred_ms bigint
) ON COMMIT DELETE ROWS
"""


def _insert_sql(*, skip_existing: bool) -> str:
    click, link = Click._meta.db_table, ReferralLink._meta.db_table
    on_conflict = "ON CONFLICT (tenant_id, stream_id) DO NOTHING" if skip_existing else ""
    return f"""
    INSERT INTO {click} (tenant_id, link_id, program_id, participant_id, stream_id, visitor_id, ip,
                         user_agent, referer, channel, utm, is_bot, occurred_at)
    SELECT link.tenant_id, link.id, link.program_id, link.participant_id, i.stream_id, i.visitor_id, i.ip,
           i.user_agent, i.referer, link.channel, i.utm, i.is_bot, to_timestamp(i.occurred_ms / 1000.0)
    FROM click_flush_in i
    JOIN {link} link ON link.id = i.link_id AND link.tenant_id = i.tenant_id
    {on_conflict}
    RETURNING id
    """  # noqa: S608 - table names come from model metadata


def _utm(query: str) -> str:
    """The request's utm_* parameters as a JSON object (first value of each, at most 200 chars)."""
    if "utm_" not in query:
        return "{}"
    found = {}
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if name in UTM_KEYS and name not in found and value:
            found[name] = unquote_plus(value)[:200]
    return json.dumps(found, separators=(",", ":"))


_IPV4 = re.compile(r"(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\Z")


def _valid_ip(value: str) -> str:
    """``value`` if it is an IP address Postgres accepts, else "" (stored as NULL)."""
    if not value or _IPV4.match(value):
        return value
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return ""


_DIGITS = re.compile(r"[0-9]{1,18}\Z")
_COPY_SPECIAL = re.compile(r"[\\\t\n\r]")
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(value: str) -> str:
    """``value`` escaped for COPY's text format (backslash, tab, newline, carriage return)."""
    return value.translate(_COPY_ESCAPES) if _COPY_SPECIAL.search(value) else value


def entry_clicks(entry_id: bytes, fields: list) -> list[tuple[str, bytes]]:
    """(stream id, click) of each click a stream entry holds: one (``c``, the redirect's round trip; the entry
    id is its key) or a spooled batch (``b``, referrals/click_spool.py: each click carries its own key)."""
    if len(fields) == 2 and fields[0] == b"c":
        return [(entry_id.decode(), fields[1])]
    if len(fields) == 2 and fields[0] == b"b":
        return [(key.decode(), click) for key, click in click_spool.parse_lines(fields[1])]
    raise ValueError("not a click entry")


def encode_batch(entries: list[Entry]) -> tuple[io.StringIO, FlushResult]:
    """The batch as COPY text rows, with counts (of clicks); malformed entries are left out (and logged)."""
    result = FlushResult(entries=len(entries))
    lines = []
    bot_by_agent: dict[str, bool] = {}
    for entry_id, fields in entries:
        try:
            clicks = entry_clicks(entry_id, fields)
        except (ValueError, TypeError):
            result.read += 1
            result.malformed += 1
            logger.warning("dropping malformed click stream entry %r", entry_id)
            continue
        result.read += len(clicks)
        for stream_id, click in clicks:
            try:
                raw = click.decode("utf-8", "replace").replace("\x00", "")
                ids, _code, visitor_id, ip, user_agent, referer, query = raw.split(SEPARATOR)
                tenant_id, link_id, _program_id, _participant_id, _channel = ids.split(":")
                occurred_ms = stream_id.partition("-")[0]
                if not (_DIGITS.match(tenant_id) and _DIGITS.match(link_id) and _DIGITS.match(occurred_ms)):
                    raise ValueError("ids are not numbers")
            except ValueError:
                result.malformed += 1
                logger.warning("dropping malformed click %r of stream entry %r", stream_id, entry_id)
                continue
            is_bot = bot_by_agent.get(user_agent)
            if is_bot is None:
                is_bot = bot_by_agent[user_agent] = is_bot_user_agent(user_agent)
            result.bots += is_bot
            lines.append(
                "\t".join(
                    (
                        tenant_id,
                        link_id,
                        _copy_text(stream_id),
                        _copy_text(visitor_id[:64]),
                        _valid_ip(ip) or "\\N",
                        _copy_text(user_agent[:MAX_USER_AGENT]),
                        _copy_text(referer[:MAX_REFERER]),
                        _copy_text(_utm(query)),
                        "t" if is_bot else "f",
                        occurred_ms,
                    )
                )
            )
    lines.append("")
    return io.StringIO("\n".join(lines) if len(lines) > 1 else ""), result


def write_batch(entries: list[Entry]) -> FlushResult:
    """Insert a batch of stream entries as clicks in one transaction (committed on return)."""
    buffer, result = encode_batch(entries)
    return insert_encoded(buffer, result)


def insert_encoded(buffer: io.StringIO, result: FlushResult) -> FlushResult:
    """COPY the encoded rows into a temporary table and insert them as clicks, in one transaction.

    Optimistic: a plain INSERT first (cheaper than ON CONFLICT's speculative insertion). Only a
    batch that was already written in part (a retry after a crash, or a flush that took over
    another's entries) hits the unique (tenant_id, stream_id) constraint; that statement is rolled
    back to its savepoint and the batch inserted again skipping the rows already there.
    """
    # Cross-tenant by nature (one stream, every tenant's clicks): the audited row-level-security bypass.
    with rls.bypass("click flush"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_TEMP_TABLE)
        cursor.execute("DELETE FROM click_flush_in")
        cursor.copy_expert("COPY click_flush_in FROM STDIN", buffer)
        try:
            with transaction.atomic():
                cursor.execute(_insert_sql(skip_existing=False))
        except IntegrityError as error:
            if getattr(error.__cause__, "pgcode", None) != UNIQUE_VIOLATION:
                raise
            cursor.execute(_insert_sql(skip_existing=True))
        click_ids = [row[0] for row in cursor.fetchall()]
        result.written = len(click_ids)
        # Higher layers (analytics rollups) queue their work for after this commit.
        hooks.clicks_flushed(click_ids=click_ids)
    result.skipped = result.read - result.malformed - result.written
    result.batches = 1
    return result


class _Writers:
    """Threads that insert encoded batches, each on its own database connection, so Postgres
    works on one batch while the flush reads and encodes the next (psycopg2 releases the GIL)."""

    def __init__(self, count: int) -> None:
        self.inbox: queue.Queue = queue.Queue()
        self.outbox: queue.Queue = queue.Queue()
        self.threads = [threading.Thread(target=self._run, name=f"click-flush-writer-{i}") for i in range(count)]
        for thread in self.threads:
            thread.start()

    def _run(self) -> None:
        try:
            while (job := self.inbox.get()) is not None:
                entries, buffer, result = job
                try:
                    self.outbox.put((entries, insert_encoded(buffer, result), None))
                except Exception as error:
                    self.outbox.put((entries, None, error))
        finally:
            connection.close()

    def submit(self, entries: list[Entry], buffer: io.StringIO, result: FlushResult) -> None:
        self.inbox.put((entries, buffer, result))

    def finished(self) -> tuple[list[Entry], FlushResult | None, Exception | None]:
        return self.outbox.get()

    def close(self) -> None:
        for _ in self.threads:
            self.inbox.put(None)
        for thread in self.threads:
            thread.join()


def clicks_flush(
    *,
    batch_size: int | None = None,
    claim_idle_ms: int | None = None,
    time_budget: float | None = None,
    consumer: str | None = None,
    writers: int | None = None,
    progress: Callable[[FlushResult], None] | None = None,
) -> FlushResult:
    """Move buffered clicks from the Redis stream into Postgres until the stream is drained (or the
    time budget is spent). Each entry is written exactly once and acknowledged only after the
    transaction that wrote it committed; a batch that fails stays pending and is retried later."""
    reader = BatchReader(
        consumer=consumer or consumer_name(),
        batch_size=batch_size or settings.CLICK_FLUSH_BATCH_SIZE,
        claim_idle_ms=settings.CLICK_FLUSH_CLAIM_IDLE_MS if claim_idle_ms is None else claim_idle_ms,
    )
    writer_count = writers or settings.CLICK_FLUSH_WRITERS
    pool = _Writers(writer_count)
    total = FlushResult()
    started = time.monotonic()
    in_flight = 0
    exhausted = False
    failure: Exception | None = None
    try:
        while True:
            # Collect a finished batch when every writer is busy, or when nothing more is coming.
            while in_flight and (in_flight >= writer_count or exhausted):
                entries, result, error = pool.finished()
                in_flight -= 1
                if error is not None:
                    failure = failure or error
                    exhausted = True
                    continue
                reader.ack(entries)
                total.add(result)
                total.seconds = time.monotonic() - started
                if progress:
                    progress(total)
            if exhausted:
                break
            if time_budget is not None and time.monotonic() - started >= time_budget:
                exhausted = True
                continue
            entries = reader.next_batch()
            if not entries:
                exhausted = True
                continue
            buffer, result = encode_batch(entries)
            reader.adapt(len(entries), result.read)
            pool.submit(entries, buffer, result)
            in_flight += 1
    finally:
        pool.close()
        # Idempotent, so worth doing even after an error: the acknowledged part goes.
        reader.trim()
    if failure is not None:
        raise failure
    total.seconds = time.monotonic() - started
    return total


def clicks_pending_reclaim(*, cutoff, max_attempts: int) -> int:
    """Reconciler sweep: entries a dead consumer read but never acknowledged before ``cutoff`` are taken
    over (XAUTOCLAIM) and written now, whatever CLICK_FLUSH_CLAIM_IDLE_MS says. Returns how many were
    pending. (A flush writes each entry once, so a concurrent flush is harmless.)"""
    from django.conf import settings
    from django.utils import timezone

    client = hot_redis.client()
    stream = hot_redis.click_stream_key()
    idle_ms = max(1, int((timezone.now() - cutoff).total_seconds() * 1000))
    try:
        stale = client.xpending_range(stream, GROUP, min="-", max="+", count=10_000, idle=idle_ms)
    except ResponseError:  # no stream or no group yet: nothing was ever read
        return 0
    if stale:
        clicks_flush(claim_idle_ms=idle_ms, time_budget=settings.CLICK_FLUSH_TIME_BUDGET_SECONDS)
    return len(stale)


def stream_click_keys(client=None, *, page: int = 5000) -> list[str]:
    """The ``stream_id`` of every click in the stream, in stream order (a spooled entry holds many)."""
    client = client or hot_redis.client()
    stream = hot_redis.click_stream_key()
    keys: list[str] = []
    cursor = "-"
    while True:
        entries = client.xrange(stream, min=cursor, count=page)
        for entry_id, fields in entries:
            flat = [item for pair in fields.items() for item in pair]
            keys += [key for key, _click in entry_clicks(entry_id, flat)]
        if len(entries) < page:
            return keys
        cursor = "(" + entries[-1][0].decode()


def stream_backlog() -> int:
    """Entries in the stream not yet acknowledged by the flush (pending or never delivered); a spooled
    entry holds up to ``click_spool.SHIP_CHUNK`` clicks."""
    client = hot_redis.client()
    stream = hot_redis.click_stream_key()
    try:
        groups = client.xinfo_groups(stream)
    except ResponseError:
        return 0
    ours = next((g for g in groups if _text(g["name"]) == GROUP), None)
    if ours is None:
        return client.xlen(stream)
    lag = ours.get("lag")
    return int(ours["pending"]) + (int(lag) if lag is not None else 0)
