"""Random bytes for the redirect's hot path, drawn from the operating system's CSPRNG in blocks.

Each ``/r/<code>`` needs 24 random bytes (a new visitor id, the click's key); one ``getrandom`` system
call each showed up as ~3 % of a web worker's samples under load. The bytes are the same ``os.urandom``
bytes, read 4 KiB at a time and handed out once each: per thread (no lock), and dropped in a forked
child so that two processes never hand out the same bytes.
"""

from __future__ import annotations

import base64
import os
import threading

BLOCK = 4096


class _Pool(threading.local):
    data = b""
    position = 0


_pool = _Pool()


def _after_fork() -> None:
    global _pool
    _pool = _Pool()


os.register_at_fork(after_in_child=_after_fork)


def random_bytes(count: int) -> bytes:
    """``count`` (≤ BLOCK) bytes from the CSPRNG, never handed out before."""
    pool = _pool
    start = pool.position
    if start + count > len(pool.data):
        pool.data, start = os.urandom(BLOCK), 0
    pool.position = start + count
    return pool.data[start : start + count]


def token_urlsafe(count: int) -> str:
    """As ``secrets.token_urlsafe(count)``."""
    return base64.urlsafe_b64encode(random_bytes(count)).rstrip(b"=").decode("ascii")


def token_hex(count: int) -> str:
    """As ``secrets.token_hex(count)``."""
    return random_bytes(count).hex()
