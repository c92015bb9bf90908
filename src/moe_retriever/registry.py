"""Named registries: methods, encoders, datasets and data layouts register themselves by name, and
a config selects one by that name."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")
F = TypeVar("F")


class Registry(Generic[T]):
    """A mapping name -> entry filled by :meth:`register`; :meth:`get` raises a ConfigError naming
    the config key and the available names for an unknown name.

    ``what`` says what the entries are ("method", "encoder kind"); ``key`` is the config key that
    selects one ("method", "data.name").
    """

    def __init__(self, what: str, key: str) -> None:
        self.what = what
        self.key = key
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> None:
        self._entries[name] = entry

    def register(self, name: str) -> Callable[[F], F]:
        """Decorator: register the decorated function or class under ``name``."""

        def deco(entry: F) -> F:
            self.add(name, entry)  # type: ignore[arg-type]  # F is the registered entry type
            return entry

        return deco

    def get(self, name: str, where: str | None = None) -> T:
        """The entry called ``name``; ``where`` replaces the config key in the error message."""
        if name not in self._entries:
            raise ConfigError(f"{where or self.key}: unknown {self.what} {name!r}; available: {self.names()}")
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def values(self) -> list[T]:
        return list(self._entries.values())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, name: str) -> T:
        return self.get(name)
