"""A pause for Ray Data's scheduling loop while the object-store budget holds output back.

The loop does not block then: ``ray.wait`` returns at once on a task whose finished output it may not
read yet, so behind a slow consumer it turned about 400 times a second, 20-45% of a core on 2 cores,
and the training step's threads lost that share and more (an epoch took 1.3-1.7x as long). Each
dataset's context carries :class:`PauseWhileHeldBack` (``core.data.budget.bounded``). The context
travels to Ray Data's task workers, which import this module to unpickle it: like
``core.data.block_ops`` it imports no torch, so those workers stay small processes.
"""

from __future__ import annotations

import time

PAUSE_S = 0.05  # the budget holds >= 4 batches ahead of the consumer: it cannot run dry in this time

try:
    from ray.data._internal.execution.execution_callback import ExecutionCallback
except ImportError:  # another Ray: datasets run without the pause (tests/data/test_budget.py says so)
    ExecutionCallback = None


def held_back(executor) -> bool:
    """Whether an operator of a running Ray Data execution has finished output it may not read yet."""
    return any(getattr(op, "_in_task_output_backpressure", False) for op in getattr(executor, "_topology", ()))


if ExecutionCallback is not None:
    class PauseWhileHeldBack(ExecutionCallback):
        """After a scheduling turn in which the budget held output back, wait ``PAUSE_S``."""

        def on_execution_step(self, executor) -> None:
            if held_back(executor):
                time.sleep(PAUSE_S)
else:
    PauseWhileHeldBack = None
