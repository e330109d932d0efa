"""The config's loader: YAML files and ``key=value`` texts to plain values, refusing what could hurt.

Knows nothing of the schema (:mod:`core.config` holds it and checks the values): a file must be
UTF-8, at most ``MAX_YAML_BYTES``, with no key given twice and no alias expansion beyond
``MAX_YAML_NODES`` values (a "billion laughs" file); an override value is a YAML scalar, with the
numeric literals YAML 1.1 leaves as strings (``1e30``) read as numbers, and a list field takes a
YAML list, a comma-separated list or one item. Every problem is a :class:`ConfigError` naming the
file (and line) or the value.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from core.errors import ConfigError


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (YAML would keep the last silently),
    accepts merge keys (``<<: *base``, whose keys the mapping's own may replace) and reads ``1e-3`` as a
    number (YAML 1.1 leaves exponents without a dot as strings; YAML 1.2 and every Hydra user do not)."""

    def construct_mapping(self, node, deep=False):  # type: ignore[override]
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"duplicate key {key!r} at line {key_node.start_mark.line + 1}")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_implicit_resolver(  # YAML 1.2's floats: 1e-3, 1.5E+2, .5, as 1.1's with a dot
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"), list("-+0123456789."))

MAX_YAML_BYTES = 1 << 20  # a config file is a few KB; anything near this is not a config
MAX_YAML_NODES = 100_000  # values after expanding aliases (a "billion laughs" file expands to ~10^9)


def expanded_size(value: Any, limit: int = MAX_YAML_NODES) -> int:
    """How many values ``value`` holds once YAML aliases are expanded (shared sub-trees counted each
    time they appear), computed without expanding them; stops counting past ``limit``."""
    memo: dict[int, int] = {}

    def size(v: Any) -> int:
        if id(v) in memo:
            return memo[id(v)]
        children = list(v.keys()) + list(v.values()) if isinstance(v, dict) else v if isinstance(v, list) else ()
        total = 1
        for child in children:
            total = min(total + size(child), limit + 1)
        memo[id(v)] = total
        return total

    return size(value)


def load_bounded(text: str, what: str) -> Any:
    """YAML text with unique keys, refused when it is too large or expands (through aliases) beyond
    ``MAX_YAML_NODES`` values."""
    if len(text) > MAX_YAML_BYTES:
        raise ConfigError(f"{what} is {len(text):,} characters; a config is refused above {MAX_YAML_BYTES:,}")
    try:
        value = yaml.load(text, Loader=_UniqueKeyLoader)
        too_big = expanded_size(value) > MAX_YAML_NODES
    except RecursionError:
        raise ConfigError(f"{what} nests too deeply to be a config") from None
    if too_big:
        raise ConfigError(f"{what} expands to more than {MAX_YAML_NODES:,} values through YAML aliases "
                          f"(an alias bomb?); refusing it")
    return value


def load_yaml(path: str | Path) -> Any:
    """A YAML file (UTF-8, unique keys, bounded size); any problem is a ConfigError naming the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        return load_bounded(text, f"config file {str(path)!r}") or {}
    except ConfigError as exc:
        raise ConfigError(f"config file {str(path)!r}: {exc}" if str(path) not in str(exc) else str(exc)) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {str(exc).splitlines()[0]} "
                          f"{getattr(exc, 'problem_mark', '') or ''}".strip()) from None


def dump_yaml(value: Any) -> str:
    """Plain values (dicts, lists, scalars) as YAML text that :func:`load_yaml` reads back."""
    return yaml.safe_dump(value, sort_keys=False)


def parse_scalar(text: str) -> Any:
    """A YAML scalar, except that numeric literals YAML 1.1 leaves as strings (``1e30``) are numbers."""
    try:
        value = load_bounded(text, f"override value {text[:40]!r}")
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        for cast in (int, float):
            try:
                return cast(value)
            except ValueError:
                pass
    return value


def parse_value(text: str, is_list: bool) -> Any:
    """An override's value: a YAML scalar, or for a list field a YAML list, a comma-separated list or
    one item (``fog``, ``fog,snow``, ``[fog, snow]``; empty, ``[]``, ``null`` and ``none`` are the empty list)."""
    if not is_list:
        return parse_scalar(text)
    value = parse_scalar(text) if text.startswith("[") else None
    if isinstance(value, list):
        return value
    if text.lower() in ("", "[]", "null", "none"):
        return []
    return [parse_scalar(part.strip()) for part in text.split(",")]
