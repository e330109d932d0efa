"""The checkpoint format: typed states, choosing the state to resume from, refusing another config's."""

import pytest
import torch

from core.config import RunConfig
from core.errors import CheckpointError
from core.results import RunStatus
from core.runs.checkpoint import TrainState, choose_state, load_state, resume_point, save_state
from core.runs.identity import config_hash, legacy_hash
from core.runs.rundir import RunDir

CFG = RunConfig().with_overrides(["optim.epochs=5", "model.width=4"])
HASH = config_hash(CFG)


def _state(epoch, **kw):
    return TrainState(HASH, epoch=epoch, step=10 * (epoch + 1), history=[{"epoch": e} for e in range(epoch + 1)], **kw)


def test_choose_state_takes_the_most_advanced_and_a_divergence_is_final():
    assert choose_state([None, _state(1), _state(3), _state(2)]).epoch == 3
    diverged = TrainState(HASH, epoch=1, final={"status": "diverged"}, status=RunStatus.DIVERGED.value)
    assert choose_state([_state(4), diverged]) is diverged
    assert choose_state([None, None]) is None


def test_resume_point():
    assert resume_point(None, CFG).start_epoch == 0
    r = resume_point(_state(2), CFG)
    assert (r.start_epoch, r.step, len(r.history), r.final) == (3, 30, 3, None) and r.state is not None
    done = resume_point(_state(4, final={"status": "finished", "probe_top1": 99.0}, records={"x": [1.0]}), CFG)
    assert done.final == {"status": "finished", "probe_top1": 99.0} and done.records == {"x": [1.0]}
    diverged = TrainState(HASH, final={"x": 1}, status=RunStatus.DIVERGED.value)
    assert resume_point(diverged, CFG).final == {"x": 1}
    with pytest.raises(CheckpointError, match="belongs to config other"):
        resume_point(TrainState("other", epoch=1), CFG)
    # a checkpoint written under hash version 1 resumes the same config (the one identity rule)
    assert resume_point(TrainState(legacy_hash(CFG), epoch=1, step=5), CFG).start_epoch == 2


def test_states_round_trip_through_files_with_the_previous_kept(tmp_path):
    run = RunDir(tmp_path)
    model = torch.nn.Linear(2, 2)
    save_state(run.local_state, _state(0, model=model.state_dict()))
    save_state(run.local_state, _state(1, model=model.state_dict()))
    assert sorted(p.name for p in run.state_files()) == ["latest_state.pt", "latest_state.pt.previous"]
    state = load_state([run.local_state, f"{run.local_state}.previous"], torch.device("cpu"))
    assert state.epoch == 1 and torch.equal(state.model["weight"], model.weight.detach())
    run.local_state.write_bytes(b"torn")
    with pytest.warns(UserWarning, match="unreadable checkpoint"):
        assert load_state([run.local_state, f"{run.local_state}.previous"], torch.device("cpu")).epoch == 0


def test_an_older_checkpoint_dict_still_loads():
    """Checkpoints written before TrainState (plain dicts; a diverged one without an epoch) read back."""
    old = TrainState.from_dict({"model": {}, "optimizer": {}, "epoch": 3, "step": 40, "history": [],
                                "torch_rng": None, "config_hash": HASH, "final": {}})
    assert old.epoch == 3 and not old.diverged
    diverged = TrainState.from_dict({"status": "diverged", "final": {"epoch": 2}, "config_hash": HASH})
    assert diverged.diverged and diverged.epoch == 2
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        TrainState.from_dict({"weights": 1}, "x.pt")
