"""The study's progress line counts what it says."""

from types import SimpleNamespace

from core.study.loggers import Progress


def _trial(status: str, knn: float | None = None) -> SimpleNamespace:
    return SimpleNamespace(status=status, config={"point": {"loss.name": "supcon", "seed": 0}},
                           last_result={"status": "finished", "knn_top1": knn} if knn is not None else {})


def test_the_last_trial_is_not_counted_as_running(capsys):
    progress = Progress(total=2, metric="knn_top1")
    first, second = _trial("RUNNING", 90.0), _trial("RUNNING")
    progress.on_trial_complete(0, [first, second], first)  # Tune calls it while the trial is still RUNNING
    assert "1/2 done, 1 running, 0 stopped early, 0 failed" in capsys.readouterr().out
    first.status, second.last_result = "TERMINATED", {"status": "finished", "knn_top1": 95.0}
    progress.on_trial_complete(0, [first, second], second)
    line = capsys.readouterr().out
    assert "2/2 done, 0 running" in line and "best (max) knn_top1 95.00" in line


def test_tensorboard_gets_only_what_it_can_show(tmp_path, recwarn):
    from core.study.loggers import TensorBoardLogger

    logger = TensorBoardLogger()
    seen = []
    logger._inner = SimpleNamespace(log_trial_result=lambda i, t, result: seen.append(result))
    logger.log_trial_result(1, None, {"knn_top1": 90.0, "worker_nodes": ["a1b2", "c3d4"], "worker_pids": [11, 12],
                                      "spectrum_features": [0.5, 0.25], "status": "finished", "config": {"x": 1}})
    assert seen == [{"knn_top1": 90.0, "worker_pids": [11, 12], "spectrum_features": [0.5, 0.25], "config": {"x": 1}}]
