"""`make bench`: run every benchmark under bench/ (each a bench_*.py with a main()) and print its figures."""

from __future__ import annotations

import runpy
import sys
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    scripts = sorted(HERE.glob("bench_*.py"))
    if len(sys.argv) > 1:  # `python bench/run_all.py bench_evaluation bench_rewards`: these, in this process
        scripts = [HERE / f"{name}.py" for name in sys.argv[1:]]
    if not scripts:
        print("no benchmarks yet")
        return 0
    failed: list[str] = []
    for index, script in enumerate(scripts, start=1):
        print(f"\n=== [{index}/{len(scripts)}] {script.stem} ===", flush=True)
        try:
            runpy.run_path(str(script), run_name="__main__")
        except SystemExit as exit_:
            if exit_.code not in (0, None):
                failed.append(script.stem)
        except Exception:  # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            failed.append(script.stem)
    if failed:
        print(f"\n{len(failed)} benchmark(s) failed: {', '.join(failed)}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
