"""The project's cache backend (referral_platform/cache.py): Django's Redis cache with one client object per
connection pool — the same answers, one client reused, and a forked worker process still served."""

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
