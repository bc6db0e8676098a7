"""The WSGI application of bench_redirect.py: the project's (referral_platform.wsgi, /r/<code> answered
before Django) plus the physical floor of the server stack at /bench/raw/<code>: a raw WSGI callable that
answers a fixed 302 and nothing else (no Django, no Redis), served by the same gunicorn and workers."""

from referral_platform.wsgi import application as project_application

RAW_PREFIX = "/bench/raw/"
RAW_HEADERS = [
    ("Location", "https://bench.example/landing"),
    ("Content-Type", "text/html; charset=utf-8"),
    ("Content-Length", "0"),
]


def application(environ, start_response):
    if environ.get("PATH_INFO", "").startswith(RAW_PREFIX):
        start_response("302 Found", RAW_HEADERS)
        return [b""]
    return project_application(environ, start_response)
