"""What the benchmarks that serve the project with gunicorn share."""

from __future__ import annotations


def gunicorn_worker_class(threads: int) -> list[str]:
    """gunicorn's worker-class arguments: threaded (gthread) when ``threads`` is above 1, else sync."""
    return ["--worker-class", "gthread", "--threads", str(threads)] if threads > 1 else ["--worker-class", "sync"]


def worker_words(threads: int) -> str:
    return f"gthread workers x {threads} threads" if threads > 1 else "sync workers"
