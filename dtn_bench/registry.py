"""One small generic registry: name -> factory, with "did you mean" on a miss."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from dtn_bench.checks import unknown_name_message
from dtn_bench.errors import DTNBenchError


@dataclass(frozen=True)
class Entry:
    """A registered object: its name, factory and a one-line description."""

    name: str
    factory: Callable[..., Any]
    description: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


class Registry:
    """Maps names to factories.

    Args:
        kind: what the registry holds ("norm", "model", "suite"), used in error messages.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, description: str = "", **meta: Any) -> Callable[[Callable], Callable]:
        """Decorator registering ``factory`` under ``name``."""

        def deco(factory: Callable) -> Callable:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            doc = description or (factory.__doc__ or "").strip().splitlines()[0:1]
            desc = doc if isinstance(doc, str) else (doc[0] if doc else "")
            self._entries[name] = Entry(name, factory, desc, dict(meta))
            return factory

        return deco

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._entries)

    def get(self, name: str) -> Entry:
        """The entry for ``name``; a one-line error with the closest matches when there is none."""
        try:
            return self._entries[name]
        except KeyError:
            raise DTNBenchError(unknown_name_message(self.kind, name, self.names())) from None

    def list(self, pattern: str | None = None) -> list[Entry]:
        """Entries whose name matches a shell-style ``pattern`` (substring match when it has no wildcard)."""
        return [e for e in self._entries.values() if matches(e.name, pattern)]


def matches(name: str, pattern: str | None) -> bool:
    """Shell-style match, or a substring match when ``pattern`` holds no wildcard."""
    if not pattern:
        return True
    if any(ch in pattern for ch in "*?["):
        return fnmatch.fnmatchcase(name, pattern)
    return pattern in name
