"""Supervised and variational contrastive learning at scale.

Three layers, each importing only the ones below it (``tests/test_layout.py`` checks it):

- building blocks: ``config``, ``config_loader``, ``registry``, ``errors``, ``results``, ``io``, ``fs``,
  ``progress``, ``runtime`` (the one place that starts or joins Ray);
- one run: ``runs`` (the run directory, below training and evaluation), ``data``, ``models``, ``losses``,
  ``train``, ``eval``;
- studies: ``study`` (spec, options, runner, report, claims, loggers, ablations); ``tools`` beside them.

Importing the package sets how this process's CPU memory is allocated (below); each variable or
``CONTRASTIVE_MALLOC_TUNING=0`` turns its part off.
"""

import os

# torch's CPU allocator asks the kernel for transparent huge pages on blocks of 2 MiB and more. Without
# them every activation of a CPU training step is mapped afresh in 4 KiB pages: on this project's 2-core
# machine the kernel's page faults were 40% of the step's CPU time, and the step took 1.3-1.7x as long
# (benchmarks/RESULTS.md). Read by torch at its first allocation; Ray's workers inherit it from the
# driver or set it on importing this package. THP_MEM_ALLOC_ENABLE=0 turns it off.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


def _large_blocks_from_the_heap() -> None:
    """glibc maps every block above its mmap threshold (which it adapts up to 32 MiB) afresh and unmaps it when
    freed. A CPU step's activations are larger (a 512-view batch at 32 px: 34 MB for a 16-wide first layer,
    67 MB for the small CNN's), so each was mapped, faulted in, zeroed and unmapped at every step; served from
    the heap and kept there once freed, they are reused: 1.25-1.35x the views/s of a CIFAR epoch on 2 cores
    (benchmarks/RESULTS.md, 2026-12-06). Skipped where a MALLOC_* variable already says otherwise, off glibc,
    and with CONTRASTIVE_MALLOC_TUNING=0."""
    if os.environ.get("CONTRASTIVE_MALLOC_TUNING") == "0" or any(k.startswith("MALLOC_") for k in os.environ):
        return
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's mallopt parameters
    libc.mallopt(m_mmap_threshold, 256 << 20)
    libc.mallopt(m_trim_threshold, 512 << 20)


_large_blocks_from_the_heap()
