"""The shard manifest (``DEST/manifest.json``): what a shard build wrote, and the check readers run.

Written by ``python -m core.data.shard`` every few seconds while it writes shards (so a killed build
resumes) and read by the parquet source, which refuses shards that do not match it. ``classes`` is the class-to-index
map the labels were written with: a validation split's manifest carries its training split's map.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Callable

import pyarrow.fs as pafs

from core.errors import DataError
from core.fs import join, read_bytes, write_bytes_atomic

MANIFEST = "manifest.json"


@dataclass
class ShardEntry:
    rows: int
    sha256: str
    class_counts: dict[str, int]


@dataclass
class Manifest:
    """One split's shard build: its identity (source digest, shard size, seed), classes and shards."""

    source_digest: str
    shard_size: int
    seed: int
    total: int
    classes: list[str]
    shards: dict[str, ShardEntry] = field(default_factory=dict)
    complete: bool = False
    class_counts: dict[str, int] | None = None

    def same_build(self, other: "Manifest | None") -> bool:
        return other is not None and all(getattr(self, k) == getattr(other, k) for k in self.build_keys())

    @staticmethod
    def build_keys() -> tuple[str, ...]:
        return ("source_digest", "shard_size", "seed", "total", "classes")

    def finished(self) -> "Manifest":
        counts: Counter = Counter()
        for entry in self.shards.values():
            counts.update(entry.class_counts)
        return Manifest(**{**self.__dict__, "complete": True,
                           "class_counts": dict(sorted(counts.items(), key=lambda kv: int(kv[0])))})

    def to_json(self) -> bytes:
        raw = asdict(self)
        raw["shards"] = dict(sorted(raw["shards"].items()))
        if raw["class_counts"] is None:
            del raw["class_counts"]
        return json.dumps(raw, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> "Manifest":
        """Parse a manifest; a damaged one is a DataError naming the file and the field."""
        try:
            raw = json.loads(data)
        except ValueError as exc:
            raise DataError(f"{where}: not valid JSON ({exc})") from None
        if not isinstance(raw, dict):
            raise DataError(f"{where}: must hold a JSON object")
        _need(raw, "shards", dict, where)
        _need(raw, "classes", list, where)
        shards = {}
        for name, entry in raw["shards"].items():
            if not isinstance(entry, dict) or not isinstance(entry.get("rows"), int):
                raise DataError(f"{where}: shards[{name!r}] must hold an integer 'rows'")
            shards[name] = ShardEntry(entry["rows"], str(entry.get("sha256", "")), dict(entry.get("class_counts", {})))
        numbers = {key: raw.get(key, default) for key, default in
                   (("shard_size", 0), ("seed", 0), ("total", sum(e.rows for e in shards.values())))}
        for key, value in numbers.items():
            if not isinstance(value, int) or isinstance(value, bool):
                raise DataError(f"{where}: field {key!r} must be an integer, got {value!r}")
        return cls(source_digest=str(raw.get("source_digest", "")), **numbers,
                   classes=[str(c) for c in raw["classes"]], shards=shards, complete=bool(raw.get("complete", True)),
                   class_counts=raw.get("class_counts"))

    def check(self, files: list[str], rows_of: Callable[[str], int], where: str) -> None:
        """Every listed shard present with its row count, no unlisted shard, the build complete."""
        found = {os.path.basename(f): f for f in files}
        missing, extra = sorted(set(self.shards) - set(found)), sorted(set(found) - set(self.shards))
        problems = [f"missing {missing[:5]}" if missing else "", f"not in the manifest {extra[:5]}" if extra else "",
                    "the build did not finish (rerun python -m core.data.shard)" if not self.complete else ""]
        if any(problems):
            raise DataError(f"{where} do not match {MANIFEST}: " + "; ".join(p for p in problems if p))
        for name, path in found.items():
            rows = rows_of(path)
            if rows != self.shards[name].rows:
                raise DataError(f"parquet shard {path!r} holds {rows} rows, {MANIFEST} says {self.shards[name].rows}")


    def check_classes(self, files: list[str], labels, shard_of, where: str) -> None:
        """Each shard's labels counted as its entry records them (``shard_of[i]``: the position in ``files`` of
        label ``i``'s shard); a shard rewritten with other labels but as many rows is refused, named. (Each
        shard's sha256 is checked when a build resumes, not on every read: that would hash every epoch's bytes.)"""
        import numpy as np

        for position, path in enumerate(files):
            entry = self.shards.get(os.path.basename(path))
            if entry is None or not entry.class_counts:
                continue
            values, counts = np.unique(np.asarray(labels)[np.asarray(shard_of) == position], return_counts=True)
            found = {str(int(v)): int(c) for v, c in zip(values, counts)}
            if found != {str(k): int(v) for k, v in entry.class_counts.items()}:
                raise DataError(f"{where}: shard {path!r} holds labels {_few(found)} but {MANIFEST} recorded "
                                f"{_few(entry.class_counts)}: the shard was changed after it was written; rebuild it "
                                f"with python -m core.data.shard")


def _few(counts: dict) -> str:
    items = sorted(counts.items(), key=lambda kv: int(kv[0]))
    return "{" + ", ".join(f"{k}: {v}" for k, v in items[:6]) + (", ..." if len(items) > 6 else "") + "}"


def _need(raw: dict, key: str, kind: type, where: str) -> None:
    if not isinstance(raw.get(key), kind):
        raise DataError(f"{where}: field {key!r} must be a JSON {'object' if kind is dict else 'list'}, "
                        f"got {type(raw.get(key)).__name__}")


def read_manifest(fs: pafs.FileSystem, base: str) -> Manifest | None:
    """The manifest in ``base`` (a directory in ``fs``), or None when there is none."""
    path = join(base, MANIFEST)
    data = read_bytes(fs, path)
    return None if data is None else Manifest.from_json(data, path)


def write_manifest(fs: pafs.FileSystem, base: str, manifest: Manifest) -> None:
    write_bytes_atomic(fs, join(base, MANIFEST), manifest.to_json())
