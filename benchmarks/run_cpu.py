"""The CPU benchmark set in one command (``make bench``): runs each script, prints its table,
saves its output under ``benchmarks/raw/DATE-cpu-NAME.txt`` and the total wall time.

    python benchmarks/run_cpu.py            # about 7 minutes on 2 cores
"""

from __future__ import annotations

import datetime
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = {
    "loss_kernels": ["--reps", "3"],
    "data_pipeline": [],
    "ray_overhead": [],
    "search_efficiency": [],
}


def main() -> int:
    day = datetime.date.today().isoformat()
    start, failed = time.perf_counter(), []
    for name, extra in SCRIPTS.items():
        print(f"\n=== {name} ===", flush=True)
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, str(HERE / f"{name}.py"), *extra], capture_output=True, text=True)
        text = out.stdout + (f"\n[stderr tail]\n{out.stderr[-2000:]}" if out.returncode else "")
        print(text, flush=True)
        print(f"({name}: {time.perf_counter() - t0:.0f} s, exit {out.returncode})")
        (HERE / "raw" / f"{day}-cpu-{name}.txt").write_text(text)
        if out.returncode:
            failed.append(name)
    print(f"\nCPU benchmark set: {time.perf_counter() - start:.0f} s in all"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
