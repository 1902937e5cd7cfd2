"""Small bounded memos: for pure functions of hashable inputs, and per object identity (oldest entries dropped first)."""

from __future__ import annotations

from typing import Generic, TypeVar

__all__ = ["BoundedMemo", "IdentityMemo"]

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


class IdentityMemo(Generic[K, V]):
    """Values remembered per object identity, for objects that are handed out again as the same object (the
    in-process cache tiers return the entry they hold): a lookup is ``id()`` and a dict probe, with no hashing or
    comparing of the object's fields. Each remembered object is kept alive with its value, so its id cannot be
    reused by another object while it is remembered. Bounded like BoundedMemo."""

    def __init__(self, max_entries: int) -> None:
        self._data: BoundedMemo[int, tuple[K, V]] = BoundedMemo(max_entries)

    def __len__(self) -> int:
        return len(self._data)

    def get(self, obj: K) -> V | None:
        """The value remembered for this very object, or None."""
        known = self._data.get(id(obj))
        return known[1] if known is not None and known[0] is obj else None

    def put(self, obj: K, value: V) -> None:
        """Remember a value for this object."""
        self._data.put(id(obj), (obj, value))
