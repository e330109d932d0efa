"""Components by name: the tables the config checks, filled by the modules that implement them."""

import subprocess
import sys
from pathlib import Path

import pytest

from core.config import RunConfig
from core.errors import ConfigError
from core.registry import AUGMENTATIONS, BACKBONES, CORRUPTION_SUITES, LOSSES, SOURCES, Registry

REPO = Path(__file__).resolve().parents[1]
TABLES = {"LOSSES": "loss.name", "SOURCES": "data.source", "BACKBONES": "model.backbone",
          "AUGMENTATIONS": "augment.policy", "CORRUPTION_SUITES": "eval.corruption_suite"}


def test_exact_names_and_families_of_names():
    table = Registry("widget", "x.widget", "some.module")
    table.register("plain", 1)
    table.register("lib:", 2)
    assert table.get("plain") == 1 and table.get("lib:anything") == 2 and "lib:x" in table
    assert "lib:" not in table and "other:x" not in table  # a family needs a member name
    with pytest.raises(ConfigError, match=r"x\.widget must be one of \['plain', 'lib:<name>'\], got 'nope'"):
        table.get("nope")
    with pytest.raises(ValueError, match="registered twice"):
        table.register("plain", 3)


def test_an_empty_table_says_which_module_fills_it():
    with pytest.raises(ConfigError, match=r"x\.widget='a': no widget is registered .*import some\.module"):
        Registry("widget", "x.widget", "some.module").get("a")


def test_each_table_holds_what_its_modules_register():
    assert set(SOURCES) == {"digits", "cifar10", "cifar100", "imagefolder", "parquet", "webdataset"}
    assert [n for n, k in SOURCES.items() if not k.needs_root] == ["digits"]
    assert set(BACKBONES) == {"small_cnn", "resnet18", "resnet50", "torchvision:", "timm:"}
    assert set(AUGMENTATIONS) == {"simaugment", "autoaugment", "randaugment", "stacked_randaugment", "none"}
    assert set(CORRUPTION_SUITES) == {"imagenet_c", "fast", "cifar_c"}
    assert len(CORRUPTION_SUITES.get("imagenet_c").corruptions) == 15
    assert CORRUPTION_SUITES.get("imagenet_c").references == ("alexnet",)
    cifar_c = CORRUPTION_SUITES.get("cifar_c")  # CIFAR-10-C: 15 types + make_cifar_c.py's 4 extra, no AlexNet
    assert (len(cifar_c.corruptions), len(cifar_c.extra), cifar_c.references, cifar_c.made_for) == (15, 4, (), 32)
    assert set(LOSSES) == {"supcon", "simclr", "varcon", "vsupcon", "vsimclr", "cross_entropy"}
    with pytest.raises(ConfigError, match=r"data\.source must be one of \['digits', .*\], got 'mnist'"):
        RunConfig().with_overrides(["data.source=mnist"])


def test_the_building_blocks_import_without_torch_or_ray():
    """``import core.config`` (and every building block) works where torch and Ray are not installed."""
    probe = ("import sys\nfor m in ('torch', 'torchvision', 'ray'): sys.modules[m] = None  # ImportError on import\n"
             "import core.config, core.config_loader, core.errors, core.fs, core.io, core.registry, core.results, "
             "core.runtime\nfrom core.config import DataConfig\nprint(DataConfig.__name__)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "DataConfig", out.stderr[-1500:]


@pytest.mark.parametrize("entry", ["core.train.cli", "core.eval.rescore", "core.train.export", "core.study",
                                   "core.study.ablate"])
def test_every_entry_point_fills_every_table(entry):
    probe = (f"import {entry}\nimport core.registry as r\n"
             f"print({{name: len(getattr(r, name).names()) for name in {list(TABLES)}}})")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-1500:]
    counts = eval(out.stdout.strip().splitlines()[-1])
    assert all(counts.values()), (entry, counts)
