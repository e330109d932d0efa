import pathlib

import pytest

from core.config import ConfigError, RunConfig
from core.runs.identity import config_hash, legacy_hash, v2_hash


@pytest.mark.parametrize("override, field", [
    ("loss.temperature=0", "loss.temperature"),
    ("loss.temperature=-0.5", "loss.temperature"),
    ("optim.batch_size=1", "optim.batch_size"),
    ("loss.kl_weight=-1", "loss.kl_weight"),
    ("loss.beta=-0.1", "loss.beta"),
    ("loss.name=triplet", "loss.name"),
    ("augment.policy=mixup", "augment.policy"),
    ("model.backbone=vit", "model.backbone"),
    ("augment.strength=1.5", "augment.strength"),
    ("optim.lr=abc", "optim.lr"),
    ("data.source=cifar10", "data.root"),
    ("nonsense.key=1", "nonsense.key"),
    ("loss.nonsense=1", "loss.nonsense"),
    ("optim.variance_lr_mult=0", "optim.variance_lr_mult"),
])
def test_bad_values_raise_naming_the_field(override, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        RunConfig().with_overrides([override])


def test_varcon_epsilon_must_be_below_t1():
    with pytest.raises(ConfigError, match=r"loss\.epsilon.*t1=0\.1"):
        RunConfig().with_overrides(["loss.name=varcon", "loss.epsilon=0.1"])
    RunConfig().with_overrides(["loss.name=varcon", "loss.epsilon=0.05"])  # fine
    RunConfig().with_overrides(["loss.name=supcon", "loss.epsilon=0.5"])  # epsilon unused by SupCon


def test_batch_must_divide_over_workers():
    with pytest.raises(ConfigError, match=r"optim\.batch_size.*num_workers=3"):
        RunConfig().with_overrides(["num_workers=3", "optim.batch_size=256"])


def test_simclr_needs_two_views():
    with pytest.raises(ConfigError, match=r"augment\.views must be >= 2"):
        RunConfig().with_overrides(["loss.name=simclr", "augment.views=1"])


def test_hash_is_stable_and_identifies_the_resolved_config():
    a, b = RunConfig(), RunConfig()
    # pinned: changing it orphans checkpoints (hash version 3: only the loss knobs the family reads)
    assert config_hash(a) == config_hash(b) == "b777ea6a168b"
    assert v2_hash(a) == "7c980ad2ddf5"  # what hash version 2 (sessions 5-) called the same config
    assert legacy_hash(a) == "c89b7e7cd07c"  # what hash version 1 (sessions 1-4) called the same config
    assert config_hash(a.with_overrides(["loss.temperature=0.2"])) != config_hash(a)
    # placement fields and the evaluation protocol do not change identity (they do not change the weights)
    assert config_hash(a.with_overrides(["storage_path=/elsewhere"])) == config_hash(a)
    assert config_hash(a.with_overrides(["eval.knn_k=20", "eval.robustness=true"])) == config_hash(a)
    for weights in ("data.image_size=24", "augment.strength=0.1", "model.width=8", "optim.lr=0.2", "seed=1",
                    "num_workers=2", "precision=bf16", "data.mean=[0.4]"):
        assert config_hash(a.with_overrides([weights])) != config_hash(a), weights
    # int vs float spelling of the same value resolves identically
    assert config_hash(a.with_overrides(["optim.lr=1"])) == config_hash(a.with_overrides(["optim.lr=1.0"]))


def test_a_loss_knob_names_only_the_runs_of_the_families_that_read_it():
    from core.losses import loss_family

    base = RunConfig()
    for name in ("supcon", "simclr", "varcon", "vsupcon", "vsimclr", "cross_entropy"):
        cfg = base.with_overrides([f"loss.name={name}"])
        reads = loss_family(name).fields
        for knob, other in (("temperature", 0.3), ("base_temperature", 0.2), ("supcon_variant", "in"),
                            ("contrast_mode", "one"), ("epsilon", 0.05), ("kl_weight", 0.5),
                            ("adaptive_temperature", False), ("centroid_stop_grad", False), ("beta", 0.5)):
            changed = cfg.with_overrides([f"loss.{knob}={other}"])
            assert (config_hash(changed) != config_hash(cfg)) == (knob in reads), (name, knob)
            assert v2_hash(changed) != v2_hash(cfg)  # version 2 hashed every knob


def test_yaml_round_trip(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("loss:\n  name: varcon\n  temperature: 0.2\noptim:\n  epochs: 3\n")
    cfg = RunConfig.from_yaml(path, ["optim.lr=0.1"])
    assert (cfg.loss.name, cfg.loss.temperature, cfg.optim.epochs, cfg.optim.lr) == ("varcon", 0.2, 3, 0.1)
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


def test_missing_or_malformed_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        RunConfig.from_yaml(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        RunConfig.from_yaml(bad)
    with pytest.raises(ConfigError, match="section.key=value"):
        RunConfig().with_overrides(["loss.temperature"])


def test_effective_lr_rules():
    base = RunConfig().with_overrides(["optim.lr=0.4", "optim.batch_size=1024"])
    assert base.optim.effective_lr() == pytest.approx(0.4)
    assert base.with_overrides(["optim.lr_scaling=linear"]).optim.effective_lr() == pytest.approx(1.6)
    assert base.with_overrides(["optim.lr_scaling=sqrt"]).optim.effective_lr() == pytest.approx(0.8)


def test_numeric_literals_yaml_leaves_as_strings():
    assert RunConfig().with_overrides(["optim.lr=1e-2"]).optim.lr == 0.01
    assert RunConfig().with_overrides(["optim.lr=1e30"]).optim.lr == 1e30


def test_shipped_configs_validate():
    from pathlib import Path

    configs = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
    assert len(configs) >= 3
    for path in configs:
        cfg = RunConfig.from_yaml(str(path))  # the command line's layering: the source's defaults below the file
        if path.stem.endswith(("_local", "_laptop")):  # one machine, CIFAR-10 from local disk
            assert cfg.data.source == "cifar10" and not cfg.use_gpu, path
            assert cfg.data.image_size == 32 and cfg.eval.corruption_suite == "cifar_c", path  # the source's
        else:  # cluster recipes: shards in object storage, GPUs
            assert cfg.use_gpu and cfg.data.source == "parquet" and cfg.data.root.startswith("s3://"), path


def test_corruption_suite_and_names_are_validated():
    with pytest.raises(ConfigError, match="eval.corruption_suite must be one of"):
        RunConfig().with_overrides(["eval.corruption_suite=cifar10c"])
    with pytest.raises(ConfigError, match="eval.corruptions must be one of"):
        RunConfig().with_overrides(["eval.corruption_suite=fast", "eval.corruptions=[frost]"])  # ImageNet-C only
    assert len(RunConfig().eval.corruption_names()) == 15
    assert RunConfig().with_overrides(["eval.corruption_suite=fast"]).eval.corruption_names()[0] == "gaussian_noise"
    assert RunConfig().with_overrides(["eval.corruptions=[frost,fog]"]).eval.corruption_names() == ("frost", "fog")
    cifar_c = RunConfig().with_overrides(["eval.corruption_suite=cifar_c"]).eval
    assert len(cifar_c.corruption_names()) == 15 and len(cifar_c.suite_names()) == 19  # the 4 extra by name only
    assert RunConfig().with_overrides(["eval.corruption_suite=cifar_c", "eval.corruptions=spatter,saturate"]) \
        .eval.corruption_names() == ("spatter", "saturate")
    with pytest.raises(ConfigError, match="eval.corruptions must be one of"):
        RunConfig().with_overrides(["eval.corruptions=spatter"])  # CIFAR-10-C's extra type, not ImageNet-C's


# -- layering, typed overrides, --print-config (#15) ------------------------------------------------
def test_config_files_layer_in_order_and_overrides_win(tmp_path):
    from core.config import layered

    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("optim: {epochs: 7, lr: 0.2}\nloss: {name: varcon}\n")
    b.write_text("optim: {epochs: 9}\n")
    base = RunConfig().with_overrides(["model.width=24", "eval.robustness=true"])  # a study's defaults
    cfg = layered(base, [a, b], ["optim.lr=0.3"])
    # the study's defaults survive files that do not name them; later files and overrides win
    assert (cfg.model.width, cfg.eval.robustness) == (24, True)
    assert (cfg.optim.epochs, cfg.optim.lr, cfg.loss.name) == (9, 0.3, "varcon")
    assert cfg.optim.momentum == RunConfig().optim.momentum
    b.write_text("optim: {epochz: 9}\n")
    with pytest.raises(ConfigError, match=r"b\.yaml.*unknown config field 'optim\.epochz'"):
        layered(base, [a, b])


def test_relative_local_paths_are_made_absolute_where_the_command_runs(tmp_path, monkeypatch):
    """A study's trials run in Ray's processes (another working directory): ``data.root=../shared/data/cifar10``
    found nothing there."""
    from core.config import layered

    monkeypatch.chdir(tmp_path)
    cfg = layered(RunConfig(), [], ["data.source=cifar10", "data.root=../cifar", "eval.corruption_root=c10c",
                                    "model.weights=~/w.pt"])
    assert cfg.data.root == str(tmp_path.parent / "cifar")
    assert cfg.eval.corruption_root == str(tmp_path / "c10c")
    assert cfg.model.weights == str(pathlib.Path.home() / "w.pt")
    uri = layered(RunConfig(), [], ["data.source=cifar10", "data.root=s3://bucket/cifar"])
    assert uri.data.root == "s3://bucket/cifar"


@pytest.mark.parametrize("override, field, expected", [
    ("eval.corruptions=fog", "corruptions", ("fog",)),
    ("eval.corruptions=fog,snow", "corruptions", ("fog", "snow")),
    ("eval.corruptions=[fog, snow]", "corruptions", ("fog", "snow")),
    ("eval.corruptions=", "corruptions", ()),
    ("eval.label_budgets=5", "label_budgets", (5,)),
    ("eval.label_budgets=1,5", "label_budgets", (1, 5)),
])
def test_list_fields_parse_from_overrides(override, field, expected):
    assert getattr(RunConfig().with_overrides([override]).eval, field) == expected


@pytest.mark.parametrize("override, message", [
    ("eval.label_budgets=a", r"eval\.label_budgets must be a list of integers, got \('a',\)"),
    ("optim.lr=abc", r"optim\.lr must be a number, got 'abc'"),
    ("optim.epochs=2.5", r"optim\.epochs must be an integer, got 2\.5"),
    ("use_gpu=1", r"use_gpu must be true or false, got 1"),
    ("data.num_classes=x", r"data\.num_classes must be an integer or null, got 'x'"),
    ("eval.corruptions=fgo", r"eval\.corruptions must be one of"),
])
def test_typed_override_errors_name_the_field(override, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig().with_overrides([override])


def test_to_yaml_round_trips(tmp_path):
    cfg = RunConfig().with_overrides(["eval.corruptions=fog,snow", "optim.lr=0.01", "data.num_classes=10"])
    path = tmp_path / "resolved.yaml"
    path.write_text(cfg.to_yaml())
    assert RunConfig.from_yaml(path) == cfg


def test_print_config_prints_resolved_yaml_without_ray(tmp_path, capsys, monkeypatch):
    import ray
    import yaml

    from core.study import runner
    from core.train import main as train_main

    def no_ray(*a, **k):
        raise AssertionError("--print-config must not start Ray")

    monkeypatch.setattr(ray, "init", no_ray)
    monkeypatch.setattr(runner, "run_study", no_ray)
    extra = tmp_path / "x.yaml"
    extra.write_text("optim: {epochs: 4}\n")
    assert train_main(["--print-config", "--config", str(extra), "eval.corruptions=fog"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["optim"]["epochs"] == 4 and printed["eval"]["corruptions"] == ["fog"]


def test_yaml_alias_bombs_are_refused_at_once(tmp_path):
    """A billion-laughs file used to hang past 60 s at 2.8 GB and growing."""
    import time

    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(8):
        prev, cur = chr(97 + i), chr(98 + i)
        lines.append(f"{cur}: &{cur} [{','.join(['*' + prev] * 9)}]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="expands to more than 100,000 values through YAML aliases"):
        RunConfig().with_yaml(bomb)
    nested = "[&a [x,x,x,x,x,x,x,x,x], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a], &c [*b,*b,*b,*b,*b,*b,*b,*b,*b], " \
             "&d [*c,*c,*c,*c,*c,*c,*c,*c,*c], &e [*d,*d,*d,*d,*d,*d,*d,*d,*d], [*e,*e,*e,*e,*e,*e,*e,*e,*e]]"
    with pytest.raises(ConfigError, match="expands to more than"):
        RunConfig().with_overrides([f"eval.corruptions={nested}"])
    assert time.perf_counter() - t0 < 5
    big = tmp_path / "big.yaml"
    big.write_text("x: " + "a" * (2 << 20) + "\n")
    with pytest.raises(ConfigError, match="a config is refused above"):
        RunConfig().with_yaml(big)


def test_a_name_too_long_for_a_directory_is_refused():
    with pytest.raises(ConfigError, match="name must be at most 128 characters"):
        RunConfig().with_overrides(["name=" + "x" * 300])
    with pytest.raises(ConfigError, match=r"got 'xxx.*\.\.\. \(302 characters\)"):  # the message stays one line
        RunConfig().with_overrides(["name=" + "x" * 300])


# -- what a first day meets in a config (#52) ---------------------------------------------------------------------
def test_yaml_numbers_in_exponent_form_and_merge_keys(tmp_path):
    path = tmp_path / "hydra.yaml"
    path.write_text("x-optim: &optim {lr: 1e-3, momentum: 0.8}\n"
                    "optim:\n  <<: *optim\n  momentum: 0.95\n  weight_decay: 5E-4\n")
    cfg = RunConfig.from_yaml(path)
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay) == (0.001, 0.95, 0.0005)
    path.write_text("optim: {lr: 1e-3, lr: 2e-3}\n")
    with pytest.raises(ConfigError, match="duplicate key 'lr'"):
        RunConfig.from_yaml(path)


def test_overrides_parse_wherever_they_stand():
    from core.config import split_overrides

    flags, overrides = split_overrides(["--seeds", "0", "1", "data.train_limit=256", "--trial-resource", "local_gpu=1",
                                        "seed=3", "optim.epochz=1", "--results-dir", "a=b"])
    assert flags == ["--seeds", "0", "1", "--trial-resource", "local_gpu=1", "--results-dir", "a=b"]
    assert overrides == ["data.train_limit=256", "seed=3", "optim.epochz=1"]  # a misspelt field still fails by name


def test_the_studys_epochs_flag_scales_a_warmup_the_config_sets(tmp_path, capsys):
    import argparse

    from core.study.cli import study_config

    path = tmp_path / "c.yaml"
    path.write_text("optim: {epochs: 100, warmup_epochs: 5}\n")
    args = argparse.Namespace(config=[str(path)], overrides=[], epochs=2)
    cfg = study_config(args, RunConfig()).config
    assert (cfg.optim.epochs, cfg.optim.warmup_epochs) == (2, 0)
    assert "optim.warmup_epochs 5 -> 0 (scaled with the epochs, 5 of 100" in capsys.readouterr().out
    assert study_config(argparse.Namespace(config=[str(path)], overrides=[], epochs=40), RunConfig()) \
        .config.optim.warmup_epochs == 2
    assert study_config(argparse.Namespace(config=[str(path)], overrides=["optim.warmup_epochs=1"], epochs=2),
                        RunConfig()).config.optim.warmup_epochs == 1  # one the command names is kept
