"""The project's cache backend (referral_platform/cache.py): Django's Redis cache with one client object per
connection pool — the same answers, one client reused, and a forked worker process still served; requests run
in copied contexts (new backend objects each) share one connection pool."""

from __future__ import annotations

import os

from django.core.cache import cache, caches

from referral_platform.cache import RedisCache


def test_the_default_cache_reuses_one_client_and_answers_as_djangos():
    backend = caches["default"]
    assert isinstance(backend, RedisCache)
    assert backend._cache.get_client("a", write=True) is backend._cache.get_client("b", write=True)
    assert cache.add("cache-test:key", 1, 30) is True
    assert cache.add("cache-test:key", 2, 30) is False  # SET NX, as the drain scheduling relies on
    assert cache.get("cache-test:key") == 1
    cache.delete("cache-test:key")
    assert cache.get("cache-test:key") is None


def test_a_forked_process_gets_its_own_connections():
    cache.set("cache-test:fork", "parent", 30)  # the parent's pool holds a connection now
    pid = os.fork()
    if pid == 0:  # the child: redis-py resets the inherited pool, the shared client still works
        try:
            ok = cache.get("cache-test:fork") == "parent"
            cache.set("cache-test:fork", "child", 30)
        except BaseException:
            ok = False
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert cache.get("cache-test:fork") == "child"
    cache.delete("cache-test:fork")


def _count_redis_connects(monkeypatch) -> list:
    """Every new Redis connection from now on (``connect`` on a connection without a socket yet)."""
    import redis.connection

    made = []
    original = redis.connection.AbstractConnection.connect

    def counting(self, *args, **kwargs):
        if self._sock is None:
            made.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(redis.connection.AbstractConnection, "connect", counting)
    return made


def _in_a_fresh_thread(work) -> None:
    """Run ``work`` as a gunicorn worker thread would: its own, empty context (Django's cache handler keeps its
    backends in a context-variable local), so nothing made by the test's thread is reused."""
    import threading

    errors = []

    def run():
        try:
            work()
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    assert errors == []


def test_requests_run_in_copied_contexts_share_one_redis_connection(monkeypatch):
    """The row-level-security middleware (and the webhook door) run each request in a copy of the context, so
    Django makes a new cache backend object per request; they must still share one connection pool — before,
    every request that used the cache opened a new Redis connection."""
    from django.http import HttpResponse
    from django.test import RequestFactory

    from referral_platform.tenancy.middleware import RowLevelSecurityMiddleware

    def view(request):
        caches["default"].add("cache-test:copied", 1, 30)
        return HttpResponse(str(caches["default"].get("cache-test:copied")))

    middleware = RowLevelSecurityMiddleware(view)
    made = _count_redis_connects(monkeypatch)

    def five_requests():
        for _ in range(5):
            assert middleware(RequestFactory().get("/anything/")).content == b"1"

    _in_a_fresh_thread(five_requests)
    assert len(made) <= 1  # one connection for all five (none if the pool already held one)
    cache.delete("cache-test:copied")


def test_two_backend_objects_of_one_configuration_share_a_client_and_another_configuration_does_not():
    params = {"KEY_PREFIX": "cache-test", "OPTIONS": {}}
    url = caches["default"]._servers[0]
    first, second = RedisCache(url, params), RedisCache(url, params)
    assert first is not second and first._cache is second._cache
    other = RedisCache(url, {"KEY_PREFIX": "cache-test", "OPTIONS": {"socket_timeout": 7}})
    assert other._cache is not first._cache
    assert other._cache.get_client(write=True).connection_pool.connection_kwargs["socket_timeout"] == 7
