"""The study's progress line counts what it says."""

from types import SimpleNamespace

from core.study.loggers import Progress


def _trial(status: str, knn: float | None = None) -> SimpleNamespace:
    return SimpleNamespace(status=status, config={"point": {"loss.name": "supcon", "seed": 0}},
                           last_result={"status": "finished", "knn_top1": knn} if knn is not None else {})


def test_the_progress_line_is_short_and_counts_what_runs(capsys):
    progress = Progress(total=3, metric="knn_top1")
    first, second, third = _trial("RUNNING", 90.0), _trial("RUNNING"), _trial("PENDING")
    progress.on_trial_complete(0, [first, second, third], first)  # Tune calls it while the trial is still RUNNING
    line = capsys.readouterr().out
    assert "1/3 done (1 running, 1 queued; about" in line and "| finished: supcon seed=0 knn_top1 90.00" in line
    assert "best so far" in line and len(line) < 160, line
    first.status, second.last_result = "TERMINATED", {"status": "finished", "knn_top1": 85.0}
    progress.on_trial_complete(0, [first, second, third], second)
    line = capsys.readouterr().out
    assert "2/3 done (0 running, 1 queued;" in line and "best so far" not in line  # said only when it changes
    second.last_result = {"status": "running"}
    progress.on_trial_complete(0, [first, second], second)
    assert "1 stopped early" in capsys.readouterr().out


def test_tensorboard_gets_only_what_it_can_show(tmp_path, recwarn):
    from core.study.loggers import TensorBoardLogger

    logger = TensorBoardLogger()
    seen = []
    logger._inner = SimpleNamespace(log_trial_result=lambda i, t, result: seen.append(result))
    logger.log_trial_result(1, None, {"knn_top1": 90.0, "worker_nodes": ["a1b2", "c3d4"], "worker_pids": [11, 12],
                                      "spectrum_features": [0.5, 0.25], "status": "finished", "config": {"x": 1}})
    assert seen == [{"knn_top1": 90.0, "worker_pids": [11, 12], "spectrum_features": [0.5, 0.25], "config": {"x": 1}}]
