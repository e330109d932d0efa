"""An encoder to take away: the export loads with torch alone (``encoder.pt2``, in a process where the
platform cannot be imported) and into the library's own constructor, giving the run's features to
1e-6; a finished run asked for another evaluation is re-scored, not trained again."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core.config import RunConfig
from core.runs.identity import config_hash
from core.train import fit

REPO = Path(__file__).resolve().parents[2]
SMALL = ["optim.epochs=1", "eval.probe_epochs=2", "data.train_limit=128", "optim.batch_size=64", "model.width=4",
         "eval.online_knn=false", "eval.few_shot_episodes=0", "data.image_size=32"]


def _constructor(info: dict) -> torch.nn.Module:
    """The library's own constructor, by model.json alone (no platform code)."""
    import torchvision

    name = info["backbone"]
    if name.startswith("torchvision:"):
        return torchvision.models.get_model(name.split(":", 1)[1], weights=None)
    if name.startswith("timm:"):
        import timm

        return timm.create_model(name.split(":", 1)[1], pretrained=False, num_classes=0)
    if name == "small_cnn":
        from core.models.encoders import SmallCNN

        return SmallCNN(3, info["width"])
    net = getattr(torchvision.models, name)()
    if info["stem"] == "cifar":  # the same stem change
        net.conv1 = torch.nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        net.maxpool = torch.nn.Identity()
    return net


@pytest.mark.parametrize("backbone, stem", [("small_cnn", "cifar"), ("resnet18", "cifar"),
                                            ("torchvision:mobilenet_v3_small", "imagenet"),
                                            ("timm:resnet18", "imagenet")])
def test_export_loads_into_the_librarys_constructor_with_the_same_features(ray_session, tmp_path, backbone, stem):
    cfg = RunConfig().with_overrides([f"storage_path={tmp_path / 'runs'}", f"model.backbone={backbone}",
                                      f"model.stem={stem}", "data.mean=[0.4, 0.45, 0.5]", *SMALL])
    res = fit(cfg, verbose=False)
    out = subprocess.run([sys.executable, "-m", "core.export", res.run_dir, str(tmp_path / "out")], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    info = json.loads((tmp_path / "out" / "model.json").read_text())
    assert info["backbone"] == backbone and info["config_hash"] == config_hash(cfg) and info["input_size"] == 32
    assert info["normalization"]["mean"] == [0.4, 0.45, 0.5] and info["normalization"]["std"] == [0.25] * 3
    assert info["portable"]["output"]["dtype"] == "float32"
    convolutional = backbone in ("small_cnn", "resnet18")  # timm's and torchvision's models export at 32 px only
    if convolutional:  # any height and width, not only the trained size
        assert info["portable"]["input"]["shape"] == ["B", 3, "H", "W"], info["portable"]
    assert info["stem"] == (stem if "resnet" in backbone else None)  # the stem choice is a ResNet's only
    net = _constructor(info)
    missing, unexpected = net.load_state_dict(torch.load(tmp_path / "out" / "backbone.pt", weights_only=True),
                                              strict=not backbone.startswith(("torchvision:", "resnet")))
    assert sorted(missing) == sorted(info["missing_on_load"]) and not unexpected
    if info["missing_on_load"]:  # the classifier the platform replaced: features are its input
        path = info["missing_on_load"][0].rsplit(".", 1)[0]
        parent_path, _, leaf = path.rpartition(".")
        parent = net.get_submodule(parent_path) if parent_path else net
        assert isinstance(getattr(parent, leaf), torch.nn.Linear)
        setattr(parent, leaf, torch.nn.Identity())
    from core.eval.rescore import run_config
    from core.losses import head_of
    from core.models import build_model
    from core.runs.checkpoint import load_state
    from core.runs.rundir import RunDir

    cfg = run_config(res.run_dir)
    model = build_model(cfg, 10, head_of(cfg)).eval()
    model.load_state_dict(load_state(RunDir(res.run_dir).state_files(), torch.device("cpu")).model)
    x = torch.rand(4, 3, 32, 32)
    mean, std = (torch.tensor(info["normalization"][k]).view(1, -1, 1, 1) for k in ("mean", "std"))
    with torch.no_grad():
        assert torch.allclose(net.eval()((x - mean) / std), model.features(x), atol=1e-6, rtol=0)
    head = torch.load(tmp_path / "out" / "head.pt", weights_only=True)
    assert torch.equal(head[next(iter(head))], model.head.state_dict()[next(iter(head))])
    for batch, (h, w) in ((1, (32, 32)), (5, (32, 32)), *([(2, (48, 40))] if convolutional else [])):
        x = torch.rand(batch, 3, h, w)  # the program takes any batch size (and size, where it says so)
        with torch.no_grad():
            diff = (_features_without_the_platform(tmp_path / "out", x, tmp_path) - model.features(x)).abs().max()
        print(f"{backbone}: encoder.pt2 vs the platform's encoder, {batch} x {h} x {w}: max |diff| {diff.item():.3g}")
        assert diff.item() <= 1e-5


def _features_without_the_platform(out: Path, x: torch.Tensor, tmp: Path) -> torch.Tensor:
    """``encoder.pt2``'s features of ``x``, computed in a fresh Python where importing ``core`` fails (the
    package is blocked, not merely off the path: an editable install would find it), in another directory."""
    torch.save(x, tmp / "x.pt")
    script = ("import sys\nsys.modules['core'] = None  # 'import core' raises ImportError\n"
              "try:\n    import core\nexcept ImportError:\n    pass\nelse:\n    raise SystemExit('core importable')\n"
              "import json, torch\n"
              f"info = json.load(open({str(out / 'model.json')!r}))\n"
              f"net = torch.export.load({str(out)!r} + '/' + info['portable']['file']).module()\n"
              f"torch.save(net(torch.load({str(tmp / 'x.pt')!r})), {str(tmp / 'y.pt')!r})\n"
              "print(sorted(m for m in sys.modules if m == 'core' or m.startswith('core.')))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "['core']", done.stderr[-2000:]
    return torch.load(tmp / "y.pt")


def test_a_finished_run_with_another_evaluation_is_rescored_not_retrained(ray_session, tmp_path, capsys):
    base = [f"storage_path={tmp_path}", "optim.epochs=2", "eval.probe_epochs=3", "data.train_limit=256",
            "model.width=8", "eval.online_knn=false"]
    first = fit(RunConfig().with_overrides(base), verbose=False)
    state = Path(first.run_dir) / "latest_state.pt"
    mtime = state.stat().st_mtime_ns
    again = fit(RunConfig().with_overrides([*base, "eval.knn_k=5"]), verbose=True)
    assert "re-scoring its checkpoint with the new evaluation protocol (eval.knn_k: 200 -> 5)" in capsys.readouterr().out
    assert again.run_dir == first.run_dir and state.stat().st_mtime_ns == mtime  # the same run, nothing trained
    assert again.metrics["knn_top1"] != first.metrics["knn_top1"] and again.metrics["loss"] == first.metrics["loss"]
    assert json.loads((Path(first.run_dir) / "config.json").read_text())["config"]["eval"]["knn_k"] == 5
    from core.train import main as train_main

    assert train_main([*base, "eval.knn_k=5"]) == 0 and "finished earlier" in capsys.readouterr().out
