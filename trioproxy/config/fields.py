"""A typed reader over one TOML table that records problems instead of raising.

Every getter names the key path in its problem text and returns a usable
value (the default, or a placeholder) so that parsing continues and every
problem in the file is reported at once. :meth:`Table.finish` reports the
keys nobody asked for: a typo must not pass silently.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import types
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

T = TypeVar("T")

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_TYPE_NAMES: dict[type, str] = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    list: "an array",
    dict: "a table",
}


def join(path: str, key: str) -> str:
    """``path.key``, quoting ``key`` the way TOML would if it is not bare."""
    part = key if _BARE_KEY.fullmatch(key) else json.dumps(key)
    return f"{path}.{part}" if path else part


def check_type(value: object, kind: type[T]) -> T | None:
    """``value`` as ``kind``, or None if it is not one (bool is never a number)."""
    if isinstance(value, bool) and kind is not bool:
        return None
    if kind is float and isinstance(value, int | float):
        as_float = float(value)
        return as_float if math.isfinite(as_float) else None  # type: ignore[return-value]
    return value if isinstance(value, kind) else None


def type_name(kind: type) -> str:
    return _TYPE_NAMES.get(kind, kind.__name__)


class Table:
    """One TOML table at ``path``; problems are appended to ``problems``."""

    def __init__(
        self, data: Mapping[str, Any], path: str, problems: list[str], *, broken: bool = False
    ) -> None:
        self.data = data
        self.path = path
        self.problems = problems
        self.broken = broken
        """Not a table at all (reported once); its required keys are not reported again."""
        self._seen: set[str] = set()

    @classmethod
    def of(cls, value: object, path: str, problems: list[str]) -> Table:
        """A table reader for ``value``; a non-table is a problem and reads as empty."""
        if isinstance(value, Mapping):
            return cls(value, path, problems)
        problems.append(f"{path}: must be a table, got {type(value).__name__}")
        return cls({}, path, problems, broken=True)

    def problem(self, key: str, message: str) -> None:
        self.problems.append(f"{join(self.path, key)}: {message}")

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str) -> object:
        """The value as written (None if absent); marks the key as known."""
        self._seen.add(key)
        return self.data.get(key)

    def opt(self, key: str, kind: type[T]) -> T | None:
        """The value, or None if absent or of the wrong type (a problem)."""
        self._seen.add(key)
        if key not in self.data:
            return None
        value = check_type(self.data[key], kind)
        if value is None:
            got = self.data[key]
            shown = repr(got) if not isinstance(got, dict | list) else type(got).__name__
            self.problem(key, f"must be {type_name(kind)}, got {shown}")
        return value

    def get(self, key: str, kind: type[T], default: T) -> T:
        value = self.opt(key, kind)
        return default if value is None else value

    def req(self, key: str, kind: type[T], placeholder: T) -> T:
        """A required value; missing is a problem and reads as ``placeholder``."""
        if key not in self.data:
            self._seen.add(key)
            if not self.broken:
                self.problem(key, f"required ({type_name(kind)})")
            return placeholder
        return self.get(key, kind, placeholder)

    def table(self, key: str) -> Table:
        """The sub-table ``key`` (empty if absent)."""
        self._seen.add(key)
        return Table.of(self.data.get(key, {}), join(self.path, key), self.problems)

    def tables(self, key: str) -> list[Table]:
        """An array of tables (``[[key]]``), empty if absent."""
        value = self.opt(key, list)
        if value is None:
            return []
        path = join(self.path, key)
        return [Table.of(item, f"{path}[{i}]", self.problems) for i, item in enumerate(value)]

    def items(self) -> list[tuple[str, Table]]:
        """Every entry of a table of named tables (``[providers.<name>]``)."""
        self._seen.update(self.data)
        return [(k, Table.of(v, join(self.path, k), self.problems)) for k, v in self.data.items()]

    def finish(self) -> None:
        """Report every key that no getter asked for."""
        known = sorted(self._seen)
        for key in self.data:
            if key in self._seen:
                continue
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(known)}"
            self.problem(key, f"unknown key ({hint})")


_PLACEHOLDERS: dict[Any, Any] = {str: "", int: 0, float: 0.0, bool: False}


def build(t: Table, cls: type[T], /, **given: Any) -> T:
    """An instance of the dataclass ``cls`` read from ``t``, one key per field.

    A field's key is its name, or ``metadata["toml"]``. Scalars (``str``, ``int``,
    ``float``, ``bool``), ``Literal`` strings (checked by the validator, which names the
    choices), optional scalars and ``frozenset[...]`` arrays are read here with the field's
    default; a field without a default is required; ``metadata["derived"]`` fields (filled
    after load) are skipped. Everything else (secrets, nested tables,
    mappings) is passed in ``given``. The caller calls :meth:`Table.finish` when it has
    read every key of the table.
    """
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in given or not f.init or f.metadata.get("derived"):
            continue
        key = f.metadata.get("toml", f.name)
        kind, optional, as_set = _shape(hints[f.name], f"{cls.__name__}.{f.name}")
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if as_set:
            items: list[Any] | None = list_of(t, key, kind)
            values[f.name] = f.default if items is None else frozenset(items)
        elif required:
            values[f.name] = t.req(key, kind, _PLACEHOLDERS[kind])
        elif optional:
            value = t.opt(key, kind)
            values[f.name] = f.default if value is None else value
        else:
            values[f.name] = t.get(key, kind, f.default)
    return cls(**values, **given)


def _shape(hint: Any, where: str) -> tuple[type, bool, bool]:
    """(scalar type, optional, frozenset) of a field's annotation."""
    optional = False
    if get_origin(hint) in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        optional = len(args) < len(get_args(hint))
        if len(args) != 1:
            raise TypeError(f"{where}: pass it in `given` ({hint})")
        hint = args[0]
    if get_origin(hint) is frozenset:
        (inner,) = get_args(hint)
        return _scalar(inner, where), optional, True
    return _scalar(hint, where), optional, False


def _scalar(hint: Any, where: str) -> type:
    if get_origin(hint) is Literal:
        return str
    if hint in _PLACEHOLDERS:
        return hint  # type: ignore[no-any-return]
    raise TypeError(f"{where}: pass it in `given` ({hint})")


def list_of(t: Table, key: str, kind: type[T]) -> list[T] | None:
    """An array of ``kind`` (a wrong item is a problem naming its index), None if absent."""
    items = t.opt(key, list)
    if items is None:
        return None
    out: list[T] = []
    for i, item in enumerate(items):
        value = check_type(item, kind)
        if value is None:
            t.problems.append(f"{join(t.path, key)}[{i}]: must be {kind.__name__}, got {item!r}")
        else:
            out.append(value)
    return out


__all__ = ["Table", "build", "check_type", "join", "list_of", "type_name"]
