"""A small bounded memo for pure functions of hashable inputs (oldest entries dropped first)."""

from __future__ import annotations

from typing import Generic, TypeVar

__all__ = ["BoundedMemo"]

K = TypeVar("K")
V = TypeVar("V")


class BoundedMemo(Generic[K, V]):
    """dict-backed; when full, the oldest tenth is dropped (insertion order)."""

    def __init__(self, max_entries: int) -> None:
        self._data: dict[K, V] = {}
        self._max = max_entries

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: K) -> V | None:
        """The remembered value or None."""
        return self._data.get(key)

    def put(self, key: K, value: V) -> None:
        """Remember a value, dropping the oldest entries when full."""
        if len(self._data) >= self._max:
            for old in list(self._data)[: max(1, self._max // 10)]:
                del self._data[old]
        self._data[key] = value
