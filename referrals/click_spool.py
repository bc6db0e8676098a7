"""The redirect's local fast path: link entries remembered in the process, clicks spooled to a local file.

A warm ``/r/<code>`` costs one Redis round trip (``click_buffer.record_click_if_linked``): on two cores that
round trip (two process wake-ups, the loopback stack twice, the server's own work) is about half of the
redirect's CPU. With ``REFERRAL_CLICK_SPOOL_DIR`` set, a web process that has already seen a link answers
it from memory and appends the click to its own spool file (one ``write`` of one line, to the kernel's page
cache) before the 302 is sent; a thread of the same process ships the spool to the Redis click stream in
batches every ``REFERRAL_CLICK_SPOOL_SHIP_SECONDS``. The first request for a link in a process, and every
request whose remembered entry is not fresh, still takes the round trip (which also remembers the entry).

Guarantees (docs/hot-path.md, "The local fast path"):

- **A click is never lost once its 302 is sent**: the line is in the kernel before the answer. A worker that
  is killed (SIGKILL, OOM) leaves its spool file behind, unlocked; any other web process of the host adopts
  it (``spool_adopt_orphans``: on its first spooled click and every ``ADOPT_EVERY_SECONDS``) and ships it,
  and ``manage.py click_spool_ship`` does the same by hand. Like Redis without an fsync'd AOF, it does not
  survive the machine losing power before the kernel writes the page back.
- **Never written twice**: each click carries its own key (``<ms>-s<64 random bits>``), which the flush uses
  as the click's ``stream_id``; a line shipped again (a shipper killed between its XADDs and forgetting
  them, or an adopted file) is one more stream entry with the same key, and the flush's
  ``ON CONFLICT (tenant_id, stream_id)`` writes it once. The click's time is the request's, not the ship's.
- **A changed link stops being answered from memory within ``REFERRAL_LINK_LOCAL_SECONDS``** in other
  processes (the shipper thread re-reads every remembered entry from Redis that often and drops those that
  differ; an entry not confirmed for twice that long is not used, even when the thread is stuck) and at
  once in the process that made the change (``link_cache`` invalidation calls ``forget_local``). The
  destination is re-checked against the tenant's allowed domains on every redirect, as on the round trip.

Unset (the test settings' default), nothing here runs and every redirect takes the round trip.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import logging
import os
import re
import secrets
import socket
import threading
import time
from pathlib import Path

from django.conf import settings

from . import entropy, hot_redis

logger = logging.getLogger(__name__)

LINE_END = b"\n"
KEY_END = b"\x1e"  # between the click's key and its stream entry payload
SUFFIX = ".spool"
ADOPT_EVERY_SECONDS = 10.0
LOCAL_LINKS_MAX = 50_000
CONFIRM_CHUNK = 1_000
READ_LIMIT = 8 * 1024 * 1024  # bytes of a spool read and shipped at a time (a file that grew while Redis was away)
SHIP_CHUNK = 50  # clicks per stream entry: bounds what one flush read of CLICK_FLUSH_BATCH_SIZE entries holds
CLICK_KEY = re.compile(rb"\d{13,}-s[0-9a-f]{16}\Z")


def enabled() -> bool:
    return bool(settings.REFERRAL_CLICK_SPOOL_DIR)


# --- link entries remembered in this process -------------------------------------------------

# code -> (entry, when Redis last confirmed it, time.monotonic()). Plain dict operations only (atomic under
# the GIL): the request threads read and add, the shipper thread confirms and drops.
_links: dict[str, tuple[bytes, float]] = {}
# Orders the writers of _links (remember, forget_local, the confirmation) so a confirmation never puts back an
# entry forgotten meanwhile; the fast path's read takes no lock.
_links_lock = threading.Lock()


def local_entry(code: str) -> bytes | None:
    """The remembered entry of ``code`` when Redis confirmed it recently enough to answer from it."""
    found = _links.get(code)
    if found is None or time.monotonic() - found[1] > 2 * settings.REFERRAL_LINK_LOCAL_SECONDS:
        return None
    return found[0]


def remember(code: str, entry: bytes) -> None:
    """Keep a redirectable entry just read from Redis (or loaded from Postgres and cached there)."""
    with _links_lock:
        if len(_links) >= LOCAL_LINKS_MAX:
            _links.clear()
        _links[code] = (entry, time.monotonic())


def forget_local(codes) -> None:
    with _links_lock:
        for code in codes:
            _links.pop(code, None)


def local_links_confirm(client=None) -> int:
    """Re-read every remembered entry from Redis: keep (and confirm) the equal ones, drop the rest."""
    client = client or hot_redis.client()
    codes = list(_links)
    dropped = 0
    for start in range(0, len(codes), CONFIRM_CHUNK):
        chunk = codes[start : start + CONFIRM_CHUNK]
        confirmed_at = time.monotonic()
        current = client.mget([hot_redis.link_key(code) for code in chunk])
        with _links_lock:
            for code, value in zip(chunk, current, strict=True):
                found = _links.get(code)
                if found is None:
                    continue  # forgotten since the read: stays forgotten
                if value == found[0]:
                    _links[code] = (found[0], max(found[1], confirmed_at))
                else:
                    _links.pop(code, None)
                    dropped += 1
    return dropped


# --- the spool file ---------------------------------------------------------------------------


def click_key() -> str:
    """The click's own key: its time (ms, like a stream entry id) and 64 random bits."""
    return f"{time.time_ns() // 1_000_000}-s{entropy.token_hex(8)}"


def spool_line(key: str, ids: bytes, payload: str) -> bytes:
    # Header values and query strings carry no raw newline through gunicorn; a newline would end the line.
    body = ids + b"\x1f" + payload.encode("utf-8", "replace")
    if LINE_END in body:
        body = body.replace(LINE_END, b" ")
    return key.encode() + KEY_END + body + LINE_END


def parse_lines(data: bytes) -> list[tuple[bytes, bytes]]:
    """(click key, stream payload) of each well-formed line; a malformed one is logged and skipped."""
    parsed = []
    for line in data.split(LINE_END):
        if not line:
            continue
        key, separator, payload = line.partition(KEY_END)
        if not separator or not CLICK_KEY.match(key) or not payload[:1].isdigit():
            logger.warning("skipping a malformed click spool line (%d bytes)", len(line))
            continue
        parsed.append((key, payload))
    return parsed


def ship_lines(client, data: bytes) -> int:
    """Append the clicks of ``data`` (complete lines) to the click stream: one entry (field ``b``) per
    ``SHIP_CHUNK`` clicks, all in one round trip. The flush reads each line's key and click
    (``click_buffer.entry_clicks``)."""
    lines = data.split(LINE_END)
    if lines and not lines[-1]:
        lines.pop()
    if not lines:
        return 0
    stream = hot_redis.click_stream_key()
    with client.pipeline(transaction=False) as pipe:
        for start in range(0, len(lines), SHIP_CHUNK):
            pipe.xadd(stream, {"b": LINE_END.join(lines[start : start + SHIP_CHUNK])})
        pipe.execute()
    return len(lines)


def _complete_lines(fd: int, offset: int, size: int) -> tuple[bytes, int]:
    """At most READ_LIMIT bytes of the file from ``offset``, cut after the last complete line, and how many
    bytes were read."""
    data = os.pread(fd, min(size - offset, READ_LIMIT), offset)
    return data[: data.rfind(LINE_END) + 1], len(data)


class Spool:
    """This process's spool file: appended by requests, shipped and emptied by the shipper thread.

    The file is locked (``flock``) for the life of the process, which is how another process tells a live
    spool from a dead worker's. ``lock`` orders an append against the shipper's "everything shipped, empty
    the file" so no line is written between the check and the truncate.
    """

    def __init__(self, directory: str) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        name = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}{SUFFIX}"
        self.path = os.path.join(directory, name)
        self.pid = os.getpid()
        self.fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.lock = threading.Lock()
        self.ship_lock = threading.Lock()  # one ship at a time (the thread's, or the exit's)
        self.shipped = 0  # bytes of the file already in the stream
        self.closed = False

    def append(self, line: bytes) -> bool:
        with self.lock:
            if self.closed:
                return False
            written = os.write(self.fd, line)
        if written != len(line):
            # Disk full mid-line: end the fragment so the next line stays whole (the shipper skips it).
            with contextlib.suppress(OSError), self.lock:
                os.write(self.fd, LINE_END)
            return False
        return True

    def ship(self, client) -> int:
        """Move the complete lines not yet shipped to the stream; empty the file when all are."""
        with self.ship_lock:
            return self._ship(client)

    def _ship(self, client) -> int:
        size = os.fstat(self.fd).st_size
        shipped = 0
        if size > self.shipped:
            lines, _read = _complete_lines(self.fd, self.shipped, size)
            if lines:
                shipped = ship_lines(client, lines)
                self.shipped += len(lines)
        with self.lock:
            if self.shipped and os.fstat(self.fd).st_size == self.shipped:
                os.ftruncate(self.fd, 0)
                self.shipped = 0
        return shipped

    def close(self, client=None) -> None:
        """Ship what is left and remove the file (a clean exit); left in place when Redis is unreachable."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
        try:
            self.ship(client or hot_redis.client())
        except Exception:
            logger.exception("click spool %s not shipped at exit: left for adoption", self.path)
            os.close(self.fd)
            return
        with contextlib.suppress(OSError):
            if os.fstat(self.fd).st_size == 0:
                os.unlink(self.path)
        os.close(self.fd)


def ship_file(path: str, client) -> int | None:
    """Adopt one spool file nobody holds: ship all of it and delete it. None when it is live or gone."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None  # a live process's spool
        if os.fstat(fd).st_nlink == 0:
            return None  # another adopter shipped and removed it while we waited to open it
        size, offset, shipped = os.fstat(fd).st_size, 0, 0
        while offset < size:
            lines, read = _complete_lines(fd, offset, size)
            if not lines:
                if offset + read >= size:
                    logger.warning("click spool %s ended with an incomplete line (%d bytes): dropped", path, read)
                    break
                offset += read  # a line longer than a read: not a click line
                continue
            shipped += ship_lines(client, lines)
            offset += len(lines)
        os.unlink(path)
        return shipped
    finally:
        os.close(fd)


def spool_adopt_orphans(directory: str | None = None, client=None) -> int:
    """Ship and remove every spool file of the directory that no live process holds; the clicks shipped."""
    directory = directory or settings.REFERRAL_CLICK_SPOOL_DIR
    if not directory or not os.path.isdir(directory):
        return 0
    client = client or hot_redis.client()
    own = _state.spool.path if _state.spool is not None else None
    total = 0
    for entry in sorted(os.scandir(directory), key=lambda item: item.name):
        if entry.name.endswith(SUFFIX) and entry.path != own:
            shipped = ship_file(entry.path, client)
            if shipped:
                logger.info("adopted click spool %s: %d clicks shipped", entry.name, shipped)
                total += shipped
    return total


# --- this process's spool and shipper thread ---------------------------------------------------


class _State:
    def __init__(self) -> None:
        self.spool: Spool | None = None
        self.thread: threading.Thread | None = None
        self.stop = threading.Event()
        self.started = threading.Event()  # set once the shipper's start-up adoption is done
        self.start_lock = threading.Lock()


_state = _State()


def _after_fork() -> None:
    # A forked child has its own pid: it must neither append to nor ship its parent's file.
    global _state
    _state = _State()
    _links.clear()


os.register_at_fork(after_in_child=_after_fork)


def _spool() -> Spool | None:
    state = _state
    if state.spool is not None:
        return state.spool
    with state.start_lock:
        if state.spool is None:
            try:
                state.spool = Spool(settings.REFERRAL_CLICK_SPOOL_DIR)
            except OSError:
                directory = settings.REFERRAL_CLICK_SPOOL_DIR
                logger.exception("click spool unavailable in %s: redirects take the round trip", directory)
                return None
            state.thread = threading.Thread(target=_ship_forever, args=(state,), name="click-spool", daemon=True)
            state.thread.start()
            atexit.register(_close_at_exit, state)
    return state.spool


def start() -> None:
    """Open this process's spool and start its shipper (which adopts orphaned files) when the fast path is on."""
    if enabled():
        _spool()


def spool_click(ids: bytes, payload: str) -> bool:
    """Append the click to this process's spool; False when it could not be (the caller takes the round trip)."""
    spool = _spool()
    if spool is None:
        return False
    try:
        return spool.append(spool_line(click_key(), ids, payload))
    except OSError:
        logger.exception("click spool write failed: this click takes the round trip")
        return False


def ship_once(state: _State | None = None, client=None) -> int:
    state = state or _state
    if state.spool is None:
        return 0
    return state.spool.ship(client or hot_redis.client())


def _ship_forever(state: _State) -> None:
    client = hot_redis.client()
    next_confirm = next_adopt = 0.0
    failures = 0
    try:
        spool_adopt_orphans(client=client)  # a killed predecessor's clicks first, without waiting a period
        next_adopt = time.monotonic() + ADOPT_EVERY_SECONDS
    except Exception:
        logger.exception("adopting orphaned click spools failed; retrying")
    finally:
        state.started.set()
    # While Redis is unreachable: back off to 5 s between attempts and log once a minute, not 10 times a second.
    while not state.stop.wait(min(5.0, settings.REFERRAL_CLICK_SPOOL_SHIP_SECONDS * 2**failures)):
        try:
            ship_once(state, client)
            now = time.monotonic()
            if now >= next_confirm:
                local_links_confirm(client)
                next_confirm = now + settings.REFERRAL_LINK_LOCAL_SECONDS
            if now >= next_adopt:
                spool_adopt_orphans(client=client)
                next_adopt = now + ADOPT_EVERY_SECONDS
        except Exception:
            if failures % 12 == 0:
                logger.exception("click spool shipping failed (attempt %d); clicks wait in the file", failures + 1)
            failures = min(failures + 1, 60)
        else:
            failures = 0


def _close_at_exit(state: _State) -> None:
    state.stop.set()
    if state.spool is not None and state.spool.pid == os.getpid():
        state.spool.close()


def spool_stop() -> None:
    """Stop this process's shipper, ship what is left and remove the file (tests; a clean exit does it)."""
    state = _state
    state.stop.set()
    if state.thread is not None:
        state.thread.join(5)
    if state.spool is not None:
        state.spool.close()
    _after_fork()
