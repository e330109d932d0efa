"""Supervised and variational contrastive learning at scale.

Layers, each importing only the ones below it (``tests/test_layout.py`` checks it):

- building blocks (no torch, no Ray): ``config``, ``config_loader``, ``registry``, ``errors``, ``results``,
  ``metrics``, ``io``, ``fs``, ``progress``;
- the Ray adapter: ``runtime`` (the one place that starts or joins Ray, and the private Ray API used);
- one run: ``data``, ``models``, ``losses``, ``runs`` (the run directory, below training and evaluation),
  then ``eval``, then ``train``;
- studies: ``study`` (spec, options, runner, report, claims, loggers, ablations); ``tools`` beside them.

Importing the package sets how this process's CPU memory is allocated (below); each variable or
``CONTRASTIVE_MALLOC_TUNING=0`` turns its part off.
"""

import os

# torch's CPU allocator asks the kernel for transparent huge pages on blocks of 2 MiB and more. Without
# them every activation of a CPU training step is mapped afresh in 4 KiB pages, and the kernel's page
# faults take a large share of the step (measured in benchmarks/RESULTS.md). Read by torch at its first
# allocation; Ray's workers inherit it from the driver or set it on importing this package.
# THP_MEM_ALLOC_ENABLE=0 turns it off.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


def _large_blocks_from_the_heap() -> None:
    """glibc maps every block above its mmap threshold (which it adapts up to 32 MiB) afresh and unmaps it when
    freed. A CPU step's activations are larger, so each would be mapped, faulted in, zeroed and unmapped at
    every step; served from the heap and kept there once freed, they are reused (the speed and the memory
    this trades: benchmarks/RESULTS.md, "CIFAR-10 on 2 cores"). Skipped where a MALLOC_* variable already
    says otherwise, off glibc, and with CONTRASTIVE_MALLOC_TUNING=0."""
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
