"""The Redis connection and key names used by the referral redirect and the click buffer."""

from __future__ import annotations

import hashlib
import os
import threading

import redis
from django.conf import settings
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

_clients: dict[str, redis.Redis] = {}


def client() -> redis.Redis:
    """One pooled client per Redis URL and process (redis-py resets its pool after a fork)."""
    url = settings.REFERRAL_REDIS_URL
    found = _clients.get(url)
    if found is None:
        found = _clients[url] = redis.Redis.from_url(
            url, socket_connect_timeout=1, socket_timeout=2, health_check_interval=30
        )
    return found


def key(*parts: str) -> str:
    """A key under this deployment's (or this test run's) prefix."""
    return ":".join((settings.REFERRAL_REDIS_PREFIX, *parts))


# The redirect's one script reads a link's cache entry and appends to the click stream: on Redis Cluster
# both keys must hash to one slot, so they share this hash tag (only the part in braces is hashed).
HOT_PATH_HASH_TAG = "{rp-hot}"


def link_key(code: str) -> str:
    return f"{settings.REFERRAL_REDIS_PREFIX}:{HOT_PATH_HASH_TAG}:rl:{code}"


def click_stream_key() -> str:
    return key(HOT_PATH_HASH_TAG, "clicks")


class _Dedicated(threading.local):
    connection = None
    url = ""


_dedicated = _Dedicated()


def _forget_after_fork() -> None:
    # A forked worker must not share its parent's socket.
    global _dedicated
    _dedicated = _Dedicated()


os.register_at_fork(after_in_child=_forget_after_fork)


def _connection():
    local = _dedicated
    url = settings.REFERRAL_REDIS_URL
    if local.connection is None or local.url != url:
        # Held for the life of the thread: the redirect skips the pool's checkout and return.
        local.connection = client().connection_pool.make_connection()
        local.url = url
    return local.connection


def run_script(source: str, sha: str, keys: list[str], args: list) -> object:
    """EVALSHA on this thread's dedicated connection: the redirect's one round trip.

    Loads the script when the server does not know it, and reconnects once after a dropped
    connection (Redis restarted, idle timeout); any other failure is raised.
    """
    command = ("EVALSHA", sha, len(keys), *keys, *args)
    for attempt in (1, 2):
        connection = _connection()
        try:
            connection.send_command(*command)
            return connection.read_response()
        except NoScriptError:
            connection.send_command("SCRIPT", "LOAD", source)
            connection.read_response()
            connection.send_command(*command)
            return connection.read_response()
        except (RedisConnectionError, RedisTimeoutError):
            connection.disconnect()
            if attempt == 2:
                raise
        except ResponseError:
            raise  # the server answered: the connection is in a clean state
        except BaseException:
            connection.disconnect()  # interrupted mid-reply: never reuse a half-read connection
            raise
    raise AssertionError("unreachable")


def script_sha(source: str) -> str:
    return hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
