"""The GPU path (run with ``python -m pytest -m gpu`` on a machine with CUDA; skipped cleanly
elsewhere): losses under bf16 against fp32, a 1-worker GPU TorchTrainer fit with checkpoint and
resume, and a 2-trial study packing two trials on one GPU (``--gpus-per-trial 0.5``)."""

import pandas as pd
import pytest
import torch

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_losses_in_bf16_match_fp32():
    from core.losses import supcon_loss, varcon_loss, vcl_loss

    g = torch.Generator(device="cuda").manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(1024, 2, 128, device="cuda", generator=g), dim=-1)
    y = torch.randint(0, 100, (1024,), device="cuda", generator=g)
    mu, logvar = torch.randn(1024, 2, 128, device="cuda", generator=g), torch.full((1024, 2, 128), -4.0, device="cuda")
    cases = {"supcon": lambda f: supcon_loss(f, y, 0.1),
             "varcon": lambda f: varcon_loss(f.reshape(-1, 128), y.repeat_interleave(2), 0.1, 0.02),
             "vsupcon": lambda f: vcl_loss(f, y, mu.to(f.dtype), logvar.to(f.dtype), beta=1e-3)}
    for name, fn in cases.items():
        ref = fn(z).item()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            got = fn(z.bfloat16())
        assert got.dtype == torch.float32, name  # the losses upcast
        assert abs(got.item() - ref) / abs(ref) < 1e-2, (name, ref, got.item())


def test_one_gpu_worker_fit_checkpoints_and_resumes(ray_session, tmp_path):
    from core.config import RunConfig
    from core.train import fit

    cfg = RunConfig().with_overrides([f"storage_path={tmp_path}", "num_workers=1", "use_gpu=true", "optim.epochs=2",
                                      "eval.probe_epochs=5"])
    res = fit(cfg, verbose=False)
    assert res.status == "finished" and res.metrics["knn_top1"] > 50 and res.metrics["world_size"] == 1
    again = fit(cfg, verbose=False)  # the finished run's checkpoint is found: nothing is retrained
    assert again.metrics["probe_top1"] == res.metrics["probe_top1"]


def test_two_trials_share_one_gpu(ray_session, tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "studies" / "augmentation_robustness.py"
    spec = importlib.util.spec_from_file_location("study", path)
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    argv = ["--losses", "supcon", "--policies", "simaugment", "--strengths", "1.0", "--seeds", "0", "1",
            "--epochs", "1", "--gpus-per-trial", "0.5", "--results-dir", str(tmp_path), "eval.probe_epochs=5",
            "eval.robustness=false"]
    assert study.main_for(study.make_study, "gpu", argv, extra_args=study.extra_args) == 0
    df = pd.read_parquet(tmp_path / "trials.parquet")
    assert len(df) == 2 and (df["status"] == "finished").all()
