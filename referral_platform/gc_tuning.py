"""The garbage collector of long-running worker processes (issue 15, docs/throughput.md).

A Celery pool process imports Django, the project and its libraries once and then lives for thousands of tasks;
every full collection walks all of those objects again although none of them is ever garbage, and the default
thresholds (700 allocations) run the young generation's collection hundreds of times per drain chunk. Measured in
``bench_pipeline``: ~7 % of a worker's CPU in the collector. ``worker_gc_tune`` moves what exists when the pool
process starts into the permanent generation (``gc.freeze``: never walked again) and raises the thresholds, so
the collector runs rarely and walks only what the tasks allocate. Cyclic garbage is still collected, later.
``WORKER_GC_THRESHOLDS`` (README) sets the thresholds; ``off`` leaves Python's defaults.
"""

from __future__ import annotations

import gc

SETTING = "WORKER_GC_THRESHOLDS"
DEFAULT = "20000,50,100"


def gc_thresholds(value: str) -> tuple[int, int, int] | None:
    """The three thresholds ``value`` names (``"20000,50,100"``), or None for ``off`` / empty (Python's defaults
    are left alone). Anything else raises ValueError naming the setting."""
    text = (value or "").strip().lower()
    if text in ("", "off", "0"):
        return None
    parts = [part.strip() for part in text.split(",")]
    if len(parts) != 3 or not all(part.isdigit() for part in parts):
        raise ValueError(f"{SETTING}: {value!r} is not three whole numbers like {DEFAULT!r}, nor 'off'")
    first, second, third = (int(part) for part in parts)
    if first < 1:
        raise ValueError(f"{SETTING}: the first threshold must be at least 1 ('off' leaves Python's defaults)")
    return first, second, third


def worker_gc_tune(thresholds: tuple[int, int, int] | None) -> bool:
    """Freeze what the process holds now and set ``thresholds`` (nothing when None). Returns whether it did."""
    if thresholds is None:
        return False
    gc.collect()  # what start-up left as garbage is freed, not frozen
    gc.freeze()
    gc.set_threshold(*thresholds)
    return True
