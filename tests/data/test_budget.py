"""Memory that does not grow with the data set: every dataset carries an object-store budget of a few
batches, and Ray Data keeps within it while the consumer is slow."""

import threading
import time

import pytest

from core.config import RunConfig
from core.data.budget import (
    MIN_MB,
    RUN_STORE_FLOOR,
    bounded,
    evaluation_budget,
    run_store_bytes,
    store_budget,
    training_budget,
)


def test_the_budget_is_a_few_batches_or_two_decode_tasks():
    small = RunConfig()
    assert training_budget(small) == MIN_MB << 20  # digits: 512 rows x 2 views x 16^2 x 3 bytes is below it
    big = RunConfig().with_overrides(["data.image_size=224", "optim.batch_size=512", "num_workers=2"])
    # one stream split across the 2 ranks: 4 batches of each rank's decoded views
    assert training_budget(big) == 2 * 4 * 256 * 2 * 224 * 224 * 3
    few = big.with_overrides(["optim.batch_size=64"])  # 4 batches of 32 are less than two tasks' 2 x 256 rows
    assert training_budget(few) == 2 * 2 * 256 * 2 * 224 * 224 * 3
    sixteen = big.with_overrides(["num_workers=16", "optim.batch_size=2048"])  # ImageNet on two 8-GPU nodes
    assert training_budget(sixteen) == 16 * 4 * 128 * 2 * 224 * 224 * 3
    assert store_budget(big.data, 256, 2, float_views=True) == 4 * store_budget(big.data, 256, 2)
    assert evaluation_budget(big.data) == 2 * 512 * 224 * 224 * 3  # two chunks of evaluation images
    assert evaluation_budget(RunConfig().with_overrides(["data.object_store_mb=48"]).data) == 48 << 20


def _store_used_mib() -> float:
    import ray
    from ray._private.internal_api import get_memory_info_reply, get_state_from_address

    reply = get_memory_info_reply(get_state_from_address(ray.get_runtime_context().gcs_address))
    return reply.store_stats.object_store_bytes_used / 2**20


def _consume_slowly(ds) -> float:
    """Read ``ds`` in 32-row batches, 0.15 s each (an unbounded pipeline runs ahead of such a consumer);
    returns the seconds it took."""
    t0 = time.perf_counter()
    for _ in ds.iter_batches(batch_size=32, batch_format="numpy"):
        time.sleep(0.15)
    return time.perf_counter() - t0


def _peak_while_consuming(ds) -> float:
    """The object store's peak use while ``ds`` is consumed slowly, above what it held before (the test
    session's other objects)."""
    baseline = _store_used_mib()
    peak, done, failed = [baseline], threading.Event(), []

    def sample() -> None:
        try:
            while not done.is_set():
                peak[0] = max(peak[0], _store_used_mib())
                time.sleep(0.05)
        except Exception as exc:  # a sampler that dies would read as an empty store
            failed.append(exc)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    _consume_slowly(ds)
    done.set()
    watcher.join()
    if failed:
        raise failed[0]
    return peak[0] - baseline


@pytest.mark.slow
def test_ray_data_stays_within_the_budget_behind_a_slow_consumer(ray_session, tmp_path):
    from core.data.pipeline import epoch_dataset
    from core.data.sources import load_source
    from core.tools.photos import make_photo_folder

    root = make_photo_folder(str(tmp_path), 10, {"train": 300, "val": 2}, size=(80, 64))
    cfg = RunConfig().with_overrides(["data.source=imagefolder", f"data.root={root}", "data.image_size=64",
                                      "optim.batch_size=32", "data.object_store_mb=16"])
    rows = load_source(cfg.data).train_rows  # 3,000 images: 2 views of 64 px are 70 MiB, 6.3 MiB per decode task
    capped = _peak_while_consuming(epoch_dataset(rows, cfg, 0))
    free = _peak_while_consuming(bounded(epoch_dataset(rows, cfg, 1), 1 << 40))
    # the budget plus three task outputs: two tasks running on 2 CPUs and the block being consumed
    assert capped <= 16 + 3 * 6.3, capped  # measured: 30.5
    # without it the tasks run ahead into the store (measured: 71.3 alone, 58.6 under the full suite's load,
    # when the slower tasks had not all finished before the consumer freed the first blocks)
    assert free > 1.5 * capped, (free, capped)


def _scheduler_turns_per_second(ds) -> tuple[float, float]:
    """Ray Data's scheduling turns per second, and the share of a core its thread used, while ``ds`` is
    consumed slowly."""
    from ray.data._internal.execution.execution_callback import ExecutionCallback

    turns: list[float] = []

    class Turns(ExecutionCallback):
        def on_execution_step(self, executor) -> None:
            turns.append(time.thread_time())

    ds.context.custom_execution_callback_classes = [*ds.context.custom_execution_callback_classes, Turns]
    wall = _consume_slowly(ds)
    return len(turns) / wall, (turns[-1] - turns[0]) / wall


def test_the_scheduler_waits_while_the_budget_holds_output_back(ray_session, tmp_path):
    """Behind a slow consumer the budget is full most of the time; Ray Data's loop then spun (its wait
    returns at once on output it may not read), taking a core's share from the training step."""
    from core.data.pipeline import epoch_dataset
    from core.data.scheduler_pause import PAUSE_S, PauseWhileHeldBack
    from core.data.sources import load_source
    from core.tools.photos import make_photo_folder

    root = make_photo_folder(str(tmp_path), 8, {"train": 120, "val": 2}, size=(80, 64))
    cfg = RunConfig().with_overrides(["data.source=imagefolder", f"data.root={root}", "data.image_size=64",
                                      "optim.batch_size=32", "data.object_store_mb=16"])
    rows = load_source(cfg.data).train_rows  # 960 images: 4: 4 decode tasks of 6.3 MiB, the budget holds two
    paused = epoch_dataset(rows, cfg, 0)
    assert PauseWhileHeldBack in paused.context.custom_execution_callback_classes
    spinning = epoch_dataset(rows, cfg, 1)
    spinning.context.custom_execution_callback_classes = [
        c for c in spinning.context.custom_execution_callback_classes if c is not PauseWhileHeldBack]
    turns, core = _scheduler_turns_per_second(paused)
    spun, spun_core = _scheduler_turns_per_second(spinning)
    print(f"turns/s {turns:.0f} vs {spun:.0f}, core share {core:.3f} vs {spun_core:.3f}")
    assert turns < 1 / PAUSE_S + 15 and core < 0.05, (turns, core)
    assert spun > 5 * turns and spun_core > 3 * core, (spun, spun_core)


def test_what_a_decode_task_unpickles_imports_no_torch(ray_session, tmp_path):
    """Ray Data ships each task its function and the dataset's context (which carries the pause above):
    unpickling them in a fresh process must not import torch, or every task worker grows by ~250 MiB."""
    import subprocess
    import sys

    import numpy as np
    import ray.cloudpickle

    from core.data.decode import decode_view_batch
    from core.data.pipeline import epoch_dataset
    from core.data.sources import FolderRows

    rows = FolderRows(np.array(["a.jpg"] * 4), np.zeros(4, np.int64), np.arange(4))
    ds = epoch_dataset(rows, RunConfig(), 0)
    blob = tmp_path / "task.pkl"
    blob.write_bytes(ray.cloudpickle.dumps((ds.context, decode_view_batch)))
    code = ("import pickle, sys; pickle.load(open(sys.argv[1], 'rb')); "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('core.')))")
    out = subprocess.run([sys.executable, "-c", code, str(blob)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    loaded = eval(out.stdout)
    assert "torch" not in loaded and "core.data.scheduler_pause" in loaded, loaded


def test_a_runs_private_store_is_a_few_budgets_for_streamed_sources_only():
    folder = RunConfig().with_overrides(["data.source=imagefolder", "data.root=/x", "data.image_size=112"])
    view = 112 * 112 * 3  # two decode tasks' 2 x 512 rows of 2 views, two evaluation chunks of 512
    assert run_store_bytes(folder) == 4 * (2 * 512 * 2 + 2 * 512) * view == 441 << 20
    big = folder.with_overrides(["data.image_size=224", "optim.batch_size=512"])
    assert run_store_bytes(big) == 4 * (4 * 512 * 2 + 2 * 512) * 224 * 224 * 3  # 4 batches of 512 x 2 views
    small = folder.with_overrides(["data.image_size=32"])
    assert run_store_bytes(small) == RUN_STORE_FLOOR
    assert run_store_bytes(RunConfig()) is None  # digits: its arrays go into the store whole
    assert run_store_bytes(RunConfig().with_overrides(["data.source=cifar10", "data.root=/x"])) is None


def test_the_data_paths_budget_modules_import_without_torch():
    """The README files budget.py, block_ops.py and scheduler_pause.py as torch-free (Ray Data's side)."""
    import subprocess
    import sys

    probe = ("import sys\nfor m in ('torch', 'torchvision'): sys.modules[m] = None\n"
             "import core.data.budget, core.data.block_ops, core.data.scheduler_pause")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
