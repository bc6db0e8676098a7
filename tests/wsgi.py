"""One request through the production WSGI application (referral_platform/wsgi.py: the one gunicorn serves,
with the paths it answers before Django), for the tests of those paths."""

from __future__ import annotations

import io


def wsgi_request(method: str, path: str, *, query: str = "", body: bytes = b"", **environ_extra):
    """(status code, [(header, value)], body) of one request; ``environ_extra``: WSGI environ keys
    (``HTTP_*`` headers, ``CONTENT_TYPE``, ``wsgi.url_scheme`` ...)."""
    from referral_platform.wsgi import application

    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "HTTP_HOST": "testserver",
        "REMOTE_ADDR": "203.0.113.7",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": io.StringIO(),
        "wsgi.version": (1, 0),
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "SERVER_PROTOCOL": "HTTP/1.1",
        **environ_extra,
    }
    captured = {}

    def start_response(status, headers, exc_info=None):
        captured["status"], captured["headers"] = status, headers

    answer = b"".join(application(environ, start_response))
    return int(captured["status"].split()[0]), captured["headers"], answer
