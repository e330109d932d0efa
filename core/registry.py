"""The tables of named components a config chooses from, filled by the modules that implement them.

A config names a loss family, a data source, a backbone, an augmentation policy and a corruption suite
by string. The schema (:mod:`core.config`) checks each name against its table here; the table is filled
by the component's own module when it is imported (``core/losses/<family>.py``,
``core/data/sources.py``, ``core/models/backbones.py``, ``core/data/augment.py``,
``core/eval/robustness.py`` and ``core/eval/imagenet_c.py``), so adding one edits that module only and
this building block imports nothing above it. Every entry point of the platform imports the modules
it runs, which fills the tables; a process that imports the schema alone and builds a config is told
which package to import.
"""

from __future__ import annotations

from typing import Generic, Iterator, TypeVar

from core.errors import ConfigError

T = TypeVar("T")
PREFIX = ":"  # an entry named "timm:" stands for every "timm:<name>"


class Registry(Generic[T]):
    """Components of one kind by name. An entry whose name ends with ``:`` is a family of names
    (``torchvision:`` covers ``torchvision:resnet18``); exact names win over families."""

    def __init__(self, kind: str, field: str, home: str) -> None:
        self.kind, self.field, self.home = kind, field, home
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        """Add ``entry`` under ``name`` (its module calls this once, at import)."""
        if name in self._entries and self._entries[name] is not entry:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Remove an entry (tests that register a toy component)."""
        self._entries.pop(name, None)

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order (families end with ``:``)."""
        return tuple(self._entries)

    def key(self, name: str) -> str | None:
        """The entry ``name`` resolves to: itself, or the family (``timm:``) whose prefix it carries."""
        if name in self._entries and not name.endswith(PREFIX):
            return name
        head, sep, rest = name.partition(PREFIX)
        return f"{head}{sep}" if sep and rest and f"{head}{sep}" in self._entries else None

    def get(self, name: str) -> T:
        """The entry ``name`` resolves to; a ConfigError naming the field and the choices otherwise."""
        key = self.key(name)
        if key is not None:
            return self._entries[key]
        if not self._entries:
            raise ConfigError(f"{self.field}={name!r}: no {self.kind} is registered in this process; import "
                              f"{self.home} (it registers them) before building a config")
        shown = [f"{n}<name>" if n.endswith(PREFIX) else n for n in self._entries]
        raise ConfigError(f"{self.field} must be one of {shown}, got {name!r}")

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.key(name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())


LOSSES: Registry = Registry("loss family", "loss.name", "core.losses")
SOURCES: Registry = Registry("data source", "data.source", "core.data.sources")
BACKBONES: Registry = Registry("backbone", "model.backbone", "core.models")
AUGMENTATIONS: Registry = Registry("augmentation policy", "augment.policy", "core.data.augment")
CORRUPTION_SUITES: Registry = Registry("corruption suite", "eval.corruption_suite", "core.eval.corrupted")
