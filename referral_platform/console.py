"""Progress on a terminal for long commands (the demo seed, the benchmarks): one line redrawn in place."""

from __future__ import annotations

import sys


def progress_bar(label: str, done: int, total: int) -> None:
    """``label [#####.....] done/total``, redrawn on the same line; a new line once ``done`` reaches ``total``."""
    width = 30
    filled = int(width * done / total) if total else width
    sys.stdout.write(f"\r  {label:<28} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
    if done >= total:
        sys.stdout.write("\n")
    sys.stdout.flush()
