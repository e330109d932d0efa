"""The cluster flow's costs on one machine: the main study (4 trials, 2 at a time) submitted as a Ray Job
to the local autoscaled cluster made from cluster.yaml (``python -m core.tools.cluster local``), against the
same study on one local Ray instance, in the same run; plus the autoscaler's scale-up and scale-down times.

    python benchmarks/local_cluster.py [--out DIR]

Baseline: the same study, same flags, on a local Ray instance (``python studies/augmentation_robustness.py``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None)
    out = Path(parser.parse_args().out or tempfile.mkdtemp(prefix="cluster-bench-"))
    import cluster_scenarios

    t0 = time.time()
    local = subprocess.run([sys.executable, *cluster_scenarios.STUDY, "--results-dir", str(out / "local")],
                           cwd=REPO, capture_output=True, text=True)
    local_s = time.time() - t0
    assert local.returncode == 0, local.stderr[-2000:]
    facts = cluster_scenarios.main(out / "cluster", preempt=False)
    print(f"cluster up (head)            {facts['up_s']:.1f} s")
    print(f"scale-up (submit -> 1st node) {facts['scale_up_s']:.1f} s")
    print(f"scale-down (idle -> 0 nodes)  {facts['scale_down_s']:.1f} s (idle timeout {facts['idle_timeout_s']:.0f} s)")
    print(f"study as a Ray Job on the local cluster {facts['job_s']:.1f} s; on one local Ray instance "
          f"{local_s:.1f} s; ratio {facts['job_s'] / local_s:.2f}x")
    print(f"processes left after down: {facts['left']}")


if __name__ == "__main__":
    main()
