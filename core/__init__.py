"""Supervised and variational contrastive learning at scale.

Three layers, each importing only the ones below it (``tests/test_layout.py`` checks it):

- building blocks: ``config``, ``errors``, ``results``, ``io``, ``fs``, ``runtime`` (and the loss
  registry's leaf table, ``losses.registry``);
- one run: ``data``, ``models``, ``losses``, ``train``, ``eval``;
- studies: ``study`` (runner, report, loggers, ablations).
"""

import os

# torch's CPU allocator asks the kernel for transparent huge pages on blocks of 2 MiB and more. Without
# them every activation of a CPU training step is mapped afresh in 4 KiB pages: on this project's 2-core
# machine the kernel's page faults were 40% of the step's CPU time, and the step took 1.3-1.7x as long
# (benchmarks/RESULTS.md). Read by torch at its first allocation; Ray's workers inherit it from the
# driver or set it on importing this package. THP_MEM_ALLOC_ENABLE=0 turns it off.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
