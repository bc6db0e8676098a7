"""The project's cache backend: Django's Redis cache, with one Redis client object per connection pool, and
one client (with its pools) per process for a given configuration.

Django's ``RedisCacheClient.get_client`` builds a new ``redis.Redis`` for every cache call — its ~170 response
callbacks each time — which was a tenth of the Stripe webhook door's work per request (issue 15). A
``redis.Redis`` is safe to share between threads (each command takes a connection from the pool) and redis-py
resets a pool after a fork, so one client per pool serves every call.

Django keeps its cache backends in an ``asgiref.local.Local`` backed by a context variable: a backend first
made inside a copied context (``contextvars.copy_context().run``: the row-level-security middleware and the
Stripe webhook door run every request so) is forgotten when the request's context ends, and the next request
makes a new one. With Django's backend, that meant new connection pools, thus a new Redis connection (TCP
connect, HELLO, CLIENT SETINFO) for every request that used the cache — two thirds of the webhook door's time
in a gunicorn worker (py-spy, issue 15). Here every backend object of one configuration uses the same
process-wide client and pools, however often Django makes the backend object.
"""

from __future__ import annotations

import threading

from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.core.cache.backends.redis import RedisCacheClient
from django.utils.functional import cached_property


class _SharedClientRedisCacheClient(RedisCacheClient):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._shared_clients: dict[int, object] = {}

    def get_client(self, key=None, *, write=False):
        index = self._get_connection_pool_index(write)
        client = self._shared_clients.get(index)
        if client is None:
            client = self._shared_clients[index] = self._client(connection_pool=self._get_connection_pool(index))
        return client


_clients: dict[tuple, _SharedClientRedisCacheClient] = {}
_clients_lock = threading.Lock()


def _configuration_key(servers, options: dict) -> tuple:
    return (tuple(servers), repr(sorted(options.items(), key=lambda item: item[0])))


class RedisCache(DjangoRedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = _SharedClientRedisCacheClient

    @cached_property
    def _cache(self):
        key = _configuration_key(self._servers, self._options)
        client = _clients.get(key)
        if client is None:
            with _clients_lock:
                client = _clients.get(key)
                if client is None:
                    client = _clients[key] = self._class(self._servers, **self._options)
        return client
