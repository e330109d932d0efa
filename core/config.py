"""One typed, validated configuration for a run: the schema.

Every section is a frozen dataclass validated in ``__post_init__``; a bad value raises
:class:`ConfigError` naming the field (``loss.temperature must be > 0, got -1``) before any
Ray work starts. Names of components (loss family, data source, backbone, augmentation policy,
corruption suite) are checked against the tables of :mod:`core.registry`, which the components'
own modules fill; what a run is called and how it is identified lives with the run directory
(:mod:`core.runs.identity`); files and ``key=value`` texts are read by :mod:`core.config_loader`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import typing
from dataclasses import dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml
from pydantic import ConfigDict, TypeAdapter, ValidationError

from core.config_loader import dump_yaml, load_yaml, parse_value
from core.errors import ConfigError
from core.fs import absolute
from core.registry import AUGMENTATIONS, BACKBONES, CORRUPTION_SUITES, LOSSES, SOURCES

OPTIMIZERS = ("sgd", "lars", "adamw")

# What names a run (core.runs.identity reads these field metadata; the hash is built from them):
TRAINS, READ_BY_FAMILY = "trains", "loss_knob"  # the metadata keys
NOT_TRAINED = {TRAINS: False}  # changes no trained weight: the evaluation, where the run lives, memory budgets
LOSS_KNOB = {READ_BY_FAMILY: True}  # read only by the loss families that list it (LossFamily.fields)
LR_SCALING = ("none", "linear", "sqrt")


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def _check(cond: bool, name: str, msg: str, value: Any) -> None:
    if not cond:
        raise ConfigError(f"{name} {msg}, got {_short(value)}")


def _choice(value: str, name: str, options: Iterable[str]) -> None:
    options = tuple(options)
    _check(value in options, name, f"must be one of {list(options)}", value)


@dataclass(frozen=True)
class DataConfig:
    """Where images come from and how they are shaped."""

    source: str = "digits"
    root: str | None = None  # local path or fsspec URL for every source except digits
    image_size: int = 16
    num_classes: int | None = None  # None: taken from the source
    train_limit: int | None = None  # keep the first N training images (quick runs)
    max_bad_fraction: float = 0.01  # corrupt images tolerated before the run fails
    # where the photometric part of the views is made: "trainer" (in the training process, on its
    # device: the GPU when there is one) or "ray_data" (in the Ray Data stage on CPU tasks, which also
    # cuts the crops: scales out to CPU nodes). Encoded images are always cropped at decode time.
    augment_in: str = "trainer"
    eval_crop: float = 0.875  # evaluation view of encoded images: centre square of this x the shorter side
    # input normalisation (x - mean) / std of images in [0, 1], applied by the model (so an exported
    # encoder states it): one value for all channels or one per RGB channel
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.25,)
    # Ray Data's object-store budget per dataset, MiB (None: a few batches of its output, >= 128 MiB;
    # core/data/budget.py); memory then does not grow with the data set
    object_store_mb: int | None = field(default=None, metadata=NOT_TRAINED)

    def __post_init__(self) -> None:
        source = SOURCES.get(self.source)
        _choice(self.augment_in, "data.augment_in", ("trainer", "ray_data"))
        _check(self.image_size >= 8, "data.image_size", "must be >= 8", self.image_size)
        _check(0.0 < self.eval_crop <= 1.0, "data.eval_crop", "must be in (0, 1]", self.eval_crop)
        for name in ("mean", "std"):
            value = tuple(getattr(self, name))
            object.__setattr__(self, name, value)
            _check(len(value) in (1, 3) and all(math.isfinite(v) for v in value), f"data.{name}",
                   "must hold 1 or 3 finite numbers", value)
        _check(all(v > 0 for v in self.std), "data.std", "must be > 0", self.std)
        if self.object_store_mb is not None:
            _check(self.object_store_mb >= 16, "data.object_store_mb", "must be >= 16", self.object_store_mb)
        if source.needs_root:
            _check(bool(self.root), "data.root", f"is required for source {self.source!r}", self.root)
        if self.num_classes is not None:
            _check(self.num_classes >= 2, "data.num_classes", "must be >= 2", self.num_classes)
        if self.train_limit is not None:
            _check(self.train_limit >= 2, "data.train_limit", "must be >= 2", self.train_limit)
        _check(0.0 <= self.max_bad_fraction < 1.0, "data.max_bad_fraction", "must be in [0, 1)", self.max_bad_fraction)


@dataclass(frozen=True)
class AugmentConfig:
    """Two-view (or V-view) augmentation policy and its single strength knob."""

    policy: str = "simaugment"
    strength: float = 0.5  # 0 = identity crop, 1 = strongest
    views: int = 2
    min_crop_area: float = 0.2  # crop area fraction at strength 1 (0.2: SupContrast CIFAR; 0.08: ImageNet)

    def __post_init__(self) -> None:
        AUGMENTATIONS.get(self.policy)
        _check(0.0 <= self.strength <= 1.0, "augment.strength", "must be in [0, 1]", self.strength)
        _check(self.views >= 1, "augment.views", "must be >= 1", self.views)
        _check(0.0 < self.min_crop_area <= 1.0, "augment.min_crop_area", "must be in (0, 1]", self.min_crop_area)


@dataclass(frozen=True)
class ModelConfig:
    """Encoder backbone and heads."""

    # small_cnn, resnet18, resnet50, torchvision:<name> (any torchvision classification model) or
    # timm:<name> (pip install -e '.[models]'); built without downloading weights
    backbone: str = "small_cnn"
    stem: str = "cifar"  # cifar: 3x3 stride-1 conv, no max-pool (ResNets only); imagenet: the model's own stem
    width: int = 32  # small_cnn base channel count
    resnet_width: int = 64  # base channel count of the built-in ResNets (64: the papers'; narrower for CPU budgets)
    proj_hidden: int | None = None  # None: equal to the encoder feature dim
    proj_dim: int = 128
    weights: str | None = None  # a local state_dict loaded (strictly) into the backbone before training
    sync_bn: bool = False  # SyncBatchNorm across the Train workers (num_workers >= 2)

    def __post_init__(self) -> None:
        BACKBONES.get(self.backbone)
        _choice(self.stem, "model.stem", ("cifar", "imagenet"))
        _check(self.width >= 4, "model.width", "must be >= 4", self.width)
        _check(self.resnet_width >= 4, "model.resnet_width", "must be >= 4", self.resnet_width)
        _check(self.proj_dim >= 2, "model.proj_dim", "must be >= 2", self.proj_dim)
        if self.proj_hidden is not None:
            _check(self.proj_hidden >= 2, "model.proj_hidden", "must be >= 2", self.proj_hidden)

    def base_width(self) -> int:
        """The channel count the backbone is built with: ``resnet_width`` for the built-in ResNets, ``width``
        for the small CNN (other backbones have their own)."""
        return self.resnet_width if self.backbone in ("resnet18", "resnet50") else self.width


@dataclass(frozen=True)
class LossConfig:
    """Which objective, with every knob of every loss family (unused knobs are ignored)."""

    name: str = "supcon"
    # the knobs: each names a run only of the families that read it (a SupCon run's loss.beta trains nothing)
    temperature: float = field(default=0.1, metadata=LOSS_KNOB)  # SupCon/SimCLR t; VarCon t1
    base_temperature: float | None = field(default=None, metadata=LOSS_KNOB)  # SupCon: loss x t/base_t (off)
    supcon_variant: str = field(default="out", metadata=LOSS_KNOB)  # "out" (L_out, the paper's best) or "in"
    contrast_mode: str = field(default="all", metadata=LOSS_KNOB)  # "all" or "one" (anchor = first view only)
    epsilon: float = field(default=0.02, metadata=LOSS_KNOB)  # VarCon adaptive-temperature half-width
    kl_weight: float = field(default=1.0, metadata=LOSS_KNOB)  # VarCon KL term weight (1.0 = official)
    adaptive_temperature: bool = field(default=True, metadata=LOSS_KNOB)  # VarCon ablation: False fixes t2 = t1
    centroid_stop_grad: bool = field(default=True, metadata=LOSS_KNOB)  # VarCon ablation: False: grads reach centroids
    beta: float = field(default=1e-3, metadata=LOSS_KNOB)  # VCL KL weight

    def __post_init__(self) -> None:
        LOSSES.get(self.name)
        _check(math.isfinite(self.temperature) and self.temperature > 0, "loss.temperature", "must be > 0", self.temperature)
        if self.base_temperature is not None:
            _check(math.isfinite(self.base_temperature) and self.base_temperature > 0, "loss.base_temperature",
                   "must be finite and > 0", self.base_temperature)
        _choice(self.supcon_variant, "loss.supcon_variant", ("out", "in"))
        _choice(self.contrast_mode, "loss.contrast_mode", ("all", "one"))
        _check(self.epsilon >= 0, "loss.epsilon", "must be >= 0", self.epsilon)
        _check(self.kl_weight >= 0, "loss.kl_weight", "must be >= 0", self.kl_weight)
        _check(self.beta >= 0, "loss.beta", "must be >= 0", self.beta)


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser, schedule and batch. The LR scaling rule is explicit and logged."""

    optimizer: str = "sgd"
    lr: float = 0.05  # base LR; effective LR = lr * scale(global_batch / 256)
    lr_scaling: str = "none"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 256  # global batch of images (each with `augment.views` views)
    epochs: int = 30
    warmup_epochs: int = 0
    min_lr_ratio: float = 1e-3  # cosine decays to lr * min_lr_ratio
    grad_clip: float | None = None
    compile: bool = False  # torch.compile the model (measured: 3.1x on ResNet-18, nothing more on ResNet-50, H100)
    # LR multiplier of a variational head's log-variance layer. Its gradient is tiny (the KL's is beta/(2D)
    # per dimension, the contrastive one shrinks as sigma/||u||), so at 1x the posterior stays at its
    # initialisation; see studies/kl_weight.py's "posterior learning" section for the measurements.
    variance_lr_mult: float = 100.0  # (AdamW, whose steps do not scale with the gradient, needs less: 1-10)
    # no weight decay on normalisation weights and biases (1-D parameters), for every optimiser (LARS
    # always exempts them); off keeps the SupContrast recipe (decay on everything)
    exclude_norm_bias_decay: bool = False

    def __post_init__(self) -> None:
        _choice(self.optimizer, "optim.optimizer", OPTIMIZERS)
        _choice(self.lr_scaling, "optim.lr_scaling", LR_SCALING)
        _check(math.isfinite(self.lr) and self.lr > 0, "optim.lr", "must be > 0", self.lr)
        _check(0 <= self.momentum < 1, "optim.momentum", "must be in [0, 1)", self.momentum)
        _check(self.weight_decay >= 0, "optim.weight_decay", "must be >= 0", self.weight_decay)
        _check(self.batch_size >= 2, "optim.batch_size", "must be >= 2", self.batch_size)
        _check(self.epochs >= 1, "optim.epochs", "must be >= 1", self.epochs)
        _check(0 <= self.warmup_epochs < self.epochs or self.warmup_epochs == 0, "optim.warmup_epochs",
               f"must be in [0, optim.epochs={self.epochs})", self.warmup_epochs)
        _check(0 <= self.min_lr_ratio <= 1, "optim.min_lr_ratio", "must be in [0, 1]", self.min_lr_ratio)
        if self.grad_clip is not None:
            _check(self.grad_clip > 0, "optim.grad_clip", "must be > 0", self.grad_clip)
        _check(math.isfinite(self.variance_lr_mult) and self.variance_lr_mult > 0, "optim.variance_lr_mult",
               "must be finite and > 0", self.variance_lr_mult)

    def effective_lr(self) -> float:
        """The LR actually used after the explicit batch-size scaling rule."""
        ratio = self.batch_size / 256
        return self.lr * {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[self.lr_scaling]


@dataclass(frozen=True)
class EvalConfig:
    """Frozen-encoder evaluation protocol."""

    knn_k: int = 200
    knn_temperature: float = 0.1
    probe_epochs: int = 100
    probe_lr: float = 0.1
    online_knn: bool = True  # cheap kNN each epoch for schedulers such as ASHA
    robustness: bool = False  # corrupted test sets at 5 severities + label-scarce probes
    # "imagenet_c": the 15 ImageNet-C types (imagecorruptions library, cached per split); "cifar_c": CIFAR-10-C's
    # 15 types with make_cifar_c.py's parameters (+ 4 extra by name; cached per split; the CIFAR sources' default);
    # "fast": 7 CIFAR-10-C types re-implemented in vectorised torch (milliseconds, no cache)
    corruption_suite: str = "imagenet_c"
    corruptions: tuple[str, ...] = ()  # a subset of the suite's types; empty = all of them
    # the released corrupted sets, read instead of generating them: an ImageNet-C folder
    # (root/<corruption>/<severity>/<class>/*; class folders as in the training set) or CIFAR-10-C / CIFAR-100-C
    # (root/<corruption>.npy, 10,000 images per severity in order 1-5, and root/labels.npy)
    corruption_root: str | None = None
    # published per-type errors to normalise by (the ImageNet-C paper's mCE, metric imagenet_c_mce): "alexnet"
    reference_errors: str | None = None
    label_budgets: tuple[int, ...] = (1, 5, 10)  # labels per class for the prototype probes
    few_shot_episodes: int = 200  # N-way K-shot episodes per (N, K) on frozen test features
    batch_memory_mb: int = 256  # activations of one evaluation chunk (chunks sized by it, <= 512 images)
    # score on a seeded class-stratified subset of this many test images (clean and corrupted), the same
    # for every run; None: the whole test split. A quick look at a large test split; reports name it.
    test_limit: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "corruptions", tuple(self.corruptions))
        object.__setattr__(self, "label_budgets", tuple(self.label_budgets))
        CORRUPTION_SUITES.get(self.corruption_suite)
        if self.reference_errors is not None:
            owners = [n for n, s in CORRUPTION_SUITES.items() if self.reference_errors in s.references]
            _choice(self.reference_errors, "eval.reference_errors",
                    [ref for _, s in CORRUPTION_SUITES.items() for ref in s.references])
            _check(self.corruption_suite in owners, "eval.reference_errors", f"needs eval.corruption_suite="
                   f"{' or '.join(owners)} (the reference errors are that suite's)", self.reference_errors)
        for name in self.corruptions:
            _choice(name, "eval.corruptions", self.suite_names())
        _check(self.few_shot_episodes >= 0, "eval.few_shot_episodes", "must be >= 0", self.few_shot_episodes)
        _check(self.batch_memory_mb >= 8, "eval.batch_memory_mb", "must be >= 8", self.batch_memory_mb)
        if self.test_limit is not None:
            _check(self.test_limit >= 10, "eval.test_limit", "must be >= 10 (or null: the whole test split)",
                   self.test_limit)
        for k in self.label_budgets:
            _check(isinstance(k, int) and k >= 1, "eval.label_budgets", "must hold integers >= 1", self.label_budgets)
        _check(self.knn_k >= 1, "eval.knn_k", "must be >= 1", self.knn_k)
        _check(math.isfinite(self.knn_temperature) and self.knn_temperature > 0, "eval.knn_temperature",
               "must be finite and > 0", self.knn_temperature)
        _check(self.probe_epochs >= 1, "eval.probe_epochs", "must be >= 1", self.probe_epochs)
        _check(math.isfinite(self.probe_lr) and self.probe_lr > 0, "eval.probe_lr", "must be finite and > 0",
               self.probe_lr)

    def suite_names(self) -> tuple[str, ...]:
        """Every corruption type of the chosen suite, its extra ones included."""
        suite = CORRUPTION_SUITES.get(self.corruption_suite)
        return (*suite.corruptions, *getattr(suite, "extra", ()))

    def corruption_names(self) -> tuple[str, ...]:
        """The corruption types evaluated: the chosen subset, else the suite's benchmark types."""
        return self.corruptions or tuple(CORRUPTION_SUITES.get(self.corruption_suite).corruptions)


MAX_NAME = 128  # a run name becomes a directory name (file systems allow 255 bytes)


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one pretraining + evaluation run."""

    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig, metadata=NOT_TRAINED)
    seed: int = 0
    num_workers: int = 0  # 0: Ray Train local mode (in-process, no worker start-up)
    use_gpu: bool = False
    precision: str = "auto"  # auto (bf16 autocast on a GPU, fp32 on CPU), fp32 or bf16
    storage_path: str = field(default="runs", metadata=NOT_TRAINED)
    name: str | None = field(default=None, metadata=NOT_TRAINED)

    def __post_init__(self) -> None:
        _check(0 <= self.seed < 2**32, "seed", "must be in [0, 2**32)", self.seed)
        if self.name is not None:
            _check(bool(self.name) and "/" not in self.name and "\\" not in self.name and self.name not in (".", ".."),
                   "name", "must be a plain directory name (no path separators)", self.name)
            _check(len(self.name) <= MAX_NAME, "name", f"must be at most {MAX_NAME} characters (a directory name)",
                   self.name)
        _check(self.num_workers >= 0, "num_workers", "must be >= 0", self.num_workers)
        _choice(self.precision, "precision", ("auto", "fp32", "bf16"))
        world = max(1, self.num_workers)
        _check(self.optim.batch_size % world == 0, "optim.batch_size",
               f"must be divisible by num_workers={world}", self.optim.batch_size)
        if self.model.sync_bn and not self.use_gpu:
            raise ConfigError("model.sync_bn needs use_gpu=true: torch's SyncBatchNorm runs on GPU modules only")
        family = LOSSES.get(self.loss.name)
        if self.augment.views < family.min_views:
            raise ConfigError(f"augment.views must be >= {family.min_views} for loss {self.loss.name!r} "
                              f"(an instance needs a second view as its positive), got {self.augment.views}")
        if family.validate:
            family.validate(self)

    # -- identity -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "RunConfig":
        return _build(cls, raw, prefix="")

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Iterable[str] = ()) -> "RunConfig":
        """Built-in defaults < the data source's defaults < the file < ``section.key=value`` overrides."""
        return layered(cls(), [path], overrides)

    def with_yaml(self, path: str | Path) -> "RunConfig":
        """This config with a YAML file layered on top: the file's keys replace these values, section by
        section; keys the file does not name keep this config's values (not the built-in defaults), except
        those the data source declares when the file changes the source."""
        return layered(self, [path])

    def with_overrides(self, overrides: Iterable[str]) -> "RunConfig":
        """Apply ``section.key=value`` strings on top of this config (:meth:`Layer.from_overrides`: each
        parsed by its field's declared type). The data source's defaults are not re-applied: the command
        line's layering (:func:`resolve_layers`) does that."""
        layer = Layer.from_overrides(overrides)
        return _updated(self, layer.values, prefix="") if layer.values else self

    def with_(self, **dotted: Any) -> "RunConfig":
        """Copy with dotted-key updates, e.g. ``cfg.with_(**{"loss.temperature": 0.2})``: each value is
        checked against its field's declared type and every changed section is re-validated once."""
        return _updated(self, Layer.from_dotted("", dotted).values, prefix="")

    def to_yaml(self) -> str:
        """The resolved config as YAML (loadable with ``--config``)."""
        return dump_yaml(_plain(self.to_dict()))


SECTIONS = ("data", "augment", "model", "loss", "optim", "eval")
_OVERRIDE = re.compile(r"^([A-Za-z_]\w*)(\.\w+)*=")


def split_overrides(argv: Iterable[str]) -> tuple[list[str], list[str]]:
    """A command line's ``section.key=value`` overrides apart from its flags, wherever they stand: after
    ``--seeds 0 1`` an override would otherwise be read as a seed. A token is an override when it starts
    with a config section or top-level field and ``=`` (``data.train_limit=256``, ``seed=1``); anything
    else (``local_gpu=1`` after ``--trial-resource``) stays with the flags."""
    flags: list[str] = []
    overrides: list[str] = []
    fields = set(_hints(RunConfig))
    for token in argv:
        match = _OVERRIDE.match(token)
        (overrides if match and match.group(1) in fields else flags).append(token)
    return flags, overrides
CONFIG_HELP = (f"config: sections {', '.join(SECTIONS)} plus top-level seed, num_workers, use_gpu, precision, "
               "storage_path, name. Set a field with section.key=value (lists: key=a,b or key=[a,b]); "
               "--config files layer in order. Every field and its value: --print-config; their meaning: "
               "core/config.py. Every metric (meaning, unit, better side): python -m core.metrics.")


@dataclass(frozen=True)
class Layer:
    """One place config values come from: ``origin`` names it (``--print-config`` shows it beside every
    value it set); ``values`` is a nested partial mapping (``{"optim": {"lr": 0.1}}``)."""

    origin: str
    values: Mapping[str, Any]

    @classmethod
    def from_file(cls, path: str | Path) -> "Layer":
        """A YAML config file; top-level keys starting with ``x-`` or ``_`` are a place for YAML anchors
        (merged elsewhere with ``<<: *name``) and are not config fields."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        raw = load_yaml(path)
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping, got {type(raw).__name__}")
        return cls(f"config file {str(path)!r}",
                   {k: v for k, v in raw.items() if not (isinstance(k, str) and k.startswith(("x-", "_")))})

    @classmethod
    def from_overrides(cls, overrides: Iterable[str], origin: str = "override") -> "Layer":
        """``section.key=value`` strings, each parsed by its field's declared type: YAML scalars, and for
        list fields a YAML list, a comma-separated list or one item (``eval.corruptions=fog``)."""
        dotted: dict[str, Any] = {}
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override {item!r} must look like section.key=value")
            key, value = (part.strip() for part in item.split("=", 1))
            dotted[key] = parse_value(value, _is_sequence(field_hint(key)))
        return cls.from_dotted(origin, dotted)

    @classmethod
    def from_dotted(cls, origin: str, dotted: Mapping[str, Any]) -> "Layer":
        """``{"optim.lr": 0.1}`` -> a layer (a key that nests under a value is refused, naming it)."""
        values: dict[str, Any] = {}
        for key, value in dotted.items():
            node = values
            *path, last = key.split(".")
            for part in path:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise ConfigError(f"unknown config field {key!r}")
            node[last] = value
        return cls(origin, values)

    @classmethod
    def difference(cls, origin: str, cfg: "RunConfig", below: "RunConfig | None" = None) -> "Layer":
        """The fields where ``cfg`` differs from ``below`` (the built-in defaults): a config made in code
        (a study's defaults) as a layer that leaves the data source's defaults alone where it did not
        change them."""
        mine, base = flatten("", cfg.to_dict()), flatten("", (below or RunConfig()).to_dict())
        return cls.from_dotted(origin, {k: v for k, v in mine.items() if base.get(k) != v})

    def dotted(self) -> dict[str, Any]:
        return flatten("", self.values)


BUILT_IN = "built-in default"


@dataclass(frozen=True)
class Resolved:
    """A config and where each of its values came from (dotted field -> the layer that set it last)."""

    config: "RunConfig"
    origins: Mapping[str, str] = field(default_factory=dict)

    def origin(self, key: str) -> str:
        return self.origins.get(key, BUILT_IN)

    def to_yaml(self) -> str:
        """The resolved config as YAML (loadable with ``--config``), each value followed by a comment
        naming where it came from when that is not the built-in default."""
        lines = []
        for key, value in self.config.to_dict().items():
            if isinstance(value, dict):
                lines.append(f"{key}:")
                lines += [_annotated(f"  {k}: {_flow(v)}", self.origin(f"{key}.{k}")) for k, v in value.items()]
            else:
                lines.append(_annotated(f"{key}: {_flow(value)}", self.origin(key)))
        return "\n".join(lines) + "\n"


def _flow(value: Any) -> str:
    text = yaml.safe_dump(_plain(value), default_flow_style=True, width=10_000).strip()
    return text.removesuffix("...").strip()


def _annotated(line: str, origin: str) -> str:
    return line if origin == BUILT_IN else f"{line:<44} # {origin}"


def source_layer(source: str) -> Layer:
    """What a data source declares (its image size, normalisation, classes, corruption suite): the layer
    just above the built-in defaults."""
    return Layer.from_dotted(f"data.source={source}", dict(getattr(SOURCES.get(source), "defaults", {}) or {}))


def resolve(layers: Iterable[Layer], base: "RunConfig | None" = None) -> Resolved:
    """``base`` (the built-in defaults) < the chosen data source's defaults < each layer in order. The
    source is the one the layers end with; its defaults fill only what no layer above them sets. A wrong
    name or type fails naming the layer that set it; a wrong value (checked once, on the final config)
    names the layer whose field it is."""
    layers = list(layers)
    raw, origins = (base or RunConfig()).to_dict(), {}
    source = raw["data"]["source"]
    for layer in layers:
        data = layer.values.get("data")
        source = data.get("source", source) if isinstance(data, Mapping) else source
    if not isinstance(source, str):
        raise ConfigError(f"data.source must be a string, got {_short(source)}")
    for layer in [source_layer(source), *layers]:
        try:
            _check_layer(layer.values)
        except ConfigError as exc:
            raise ConfigError(_blamed(str(exc), layer.origin)) from None
        raw = _deep_merge(raw, layer.values)
        origins.update(dict.fromkeys(layer.dotted(), layer.origin))
    raw = _absolute_paths(raw)
    try:
        return Resolved(RunConfig.from_dict(raw), origins)
    except ConfigError as exc:
        named = re.match(r"[a-z_]+(\.[a-z_]+)?", str(exc))
        raise ConfigError(_blamed(str(exc), origins.get(named.group(0), "") if named else "")) from None


PATH_FIELDS = (("data", "root"), ("eval", "corruption_root"), ("model", "weights"))


def _absolute_paths(raw: dict[str, Any]) -> dict[str, Any]:
    """Local paths the command line gave relative to where it ran, made absolute: a study's trials and a worker
    group's ranks run in Ray's processes, whose working directory is another (a trial found no CIFAR at
    ``../shared/data/cifar10``). URIs are left as they are; ``storage_path`` is placed by ``core.runs.storage``."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for section, key in PATH_FIELDS:
        value = out.get(section, {}).get(key) if isinstance(out.get(section), dict) else None
        if isinstance(value, str) and value:
            out[section][key] = absolute(value)
    return out


def _blamed(message: str, origin: str) -> str:
    """A config error prefixed by the file that caused it (overrides and defaults speak for themselves)."""
    return f"{origin}: {message}" if origin.startswith("config file") and origin not in message else message


def _check_layer(values: Mapping[str, Any], cls: Any = None, prefix: str = "") -> None:
    """Every key of a layer names a field, and every value has its field's type (not yet its range)."""
    cls = cls or RunConfig
    if not isinstance(values, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {_short(values)}")
    known = _hints(cls)
    for name, value in values.items():
        if name not in known:
            raise ConfigError(f"unknown config field {prefix + _dotted(name, value)!r} (known: {sorted(known)})")
        if is_dataclass(known[name]):
            _check_layer(value, known[name], f"{prefix}{name}.")
        else:
            _coerce(value, known[name], f"{prefix}{name}")


def layered(base: RunConfig, config_files: Iterable[str | Path] = (), overrides: Iterable[str] = ()) -> RunConfig:
    """``base`` < each config file in order < ``section.key=value`` overrides (:func:`resolve_layers`)."""
    return resolve_layers(base, config_files, overrides).config


def resolve_layers(base: "RunConfig | Layer", config_files: Iterable[str | Path] = (), overrides: Iterable[str] = (),
                   base_origin: str = "defaults", flags: Mapping[str, Any] | None = None) -> Resolved:
    """The command line's layers: built-in defaults < the data source's < ``base`` (a study's defaults: a
    Layer as written, or a config made in code, of which what it changes) < each config file in order <
    ``section.key=value`` overrides < ``flags`` (a study's own flags, dotted key -> value)."""
    first = base if isinstance(base, Layer) else Layer.difference(base_origin, base)
    layers = [first, *(Layer.from_file(p) for p in config_files), Layer.from_overrides(overrides)]
    if flags:
        layers.append(Layer.from_dotted("flag", flags))
    return resolve(layers)


def flatten(prefix: str, d: Mapping[str, Any]) -> dict[str, Any]:
    """A nested config dict as ``prefix + section.key`` -> value (tuples as lists)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(key + ".", v))
        else:
            out[key] = list(v) if isinstance(v, tuple) else v
    return out


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``key: old -> new`` for every field that differs between two config dicts."""
    a, b = flatten("", old), flatten("", new)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def _deep_merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        out[key] = _deep_merge(out[key], value) if isinstance(out.get(key), dict) and isinstance(value, Mapping) \
            else value
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def _is_sequence(hint: Any) -> bool:
    return typing.get_origin(hint) in (tuple, list)


def field_hint(dotted: str) -> Any:
    """The declared type of a dotted field (``eval.corruptions`` -> ``tuple[str, ...]``); None if unknown."""
    cls: Any = RunConfig
    hint: Any = None
    for part in dotted.split("."):
        hints = _hints(cls) if is_dataclass(cls) else {}
        if part not in hints:
            return None
        hint = cls = hints[part]
    return hint


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


@functools.cache
def _adapter(hint: Any) -> TypeAdapter:
    return TypeAdapter(hint, config=ConfigDict(strict=True))


_KIND = {float: "a number", int: "an integer", bool: "true or false", str: "a string"}


def _describe(hint: Any) -> str:
    args = [a for a in typing.get_args(hint) if a is not Ellipsis]
    if _is_sequence(hint):
        return f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s" if args else "a list"
    if type(None) in args:
        return " or ".join(_describe(a) for a in args if a is not type(None)) + " or null"
    return _KIND.get(hint, getattr(hint, "__name__", str(hint)))


def _build(cls: type, raw: Mapping[str, Any], prefix: str) -> Any:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {_short(raw)}")
    known = _hints(cls)
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"unknown config field {prefix + unknown[0]!r} (known: {sorted(known)})")
    kwargs: dict[str, Any] = {}
    for name, value in raw.items():
        hint = known[name]
        if is_dataclass(hint):
            kwargs[name] = _build(hint, value, prefix=f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, hint, f"{prefix}{name}")
    return cls(**kwargs)


def _updated(node: Any, updates: Mapping[str, Any], prefix: str) -> Any:
    """``node`` (a config dataclass) with nested ``updates`` applied, one ``dataclasses.replace`` per
    changed section (so ``__post_init__`` validates the final values together, not each step)."""
    known = _hints(type(node))
    changes: dict[str, Any] = {}
    for name, value in updates.items():
        if name not in known:
            raise ConfigError(f"unknown config field {prefix + _dotted(name, value)!r}")
        hint = known[name]
        if is_dataclass(hint):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{prefix}{name} must be a mapping, got {_short(value)}")
            changes[name] = _updated(getattr(node, name), value, f"{prefix}{name}.")
        elif isinstance(value, Mapping):
            raise ConfigError(f"unknown config field {prefix + _dotted(name, value)!r}")
        else:
            changes[name] = _coerce(value, hint, f"{prefix}{name}")
    return dataclasses.replace(node, **changes) if changes else node


def _dotted(name: str, value: Any) -> str:
    """The first full dotted key under ``name`` of a nested update (``nonsense`` + {key: 1} -> nonsense.key)."""
    while isinstance(value, Mapping) and value:
        key = next(iter(value))
        name, value = f"{name}.{key}", value[key]
    return name


def _coerce(value: Any, hint: Any, name: str) -> Any:
    """Check a value against its field's declared type (pydantic, strict: no 'abc' -> float, no 1 -> true);
    an int is accepted for a float, a list for a tuple."""
    if isinstance(value, list):
        value = tuple(value)
    try:
        return _adapter(hint).validate_python(value)
    except ValidationError:
        raise ConfigError(f"{name} must be {_describe(hint)}, got {_short(value)}") from None
