"""The bounded memos: values by hashable key, and by object identity."""

from __future__ import annotations

from authsidecar.cache.memo import BoundedMemo, IdentityMemo


class _Same:
    """Equal to every other instance: an identity memo must still tell them apart."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Same)

    def __hash__(self) -> int:
        return 1


def test_identity_memo_answers_only_for_the_very_object() -> None:
    memo: IdentityMemo[_Same, str] = IdentityMemo(8)
    first, second = _Same(), _Same()
    memo.put(first, "first")
    assert memo.get(first) == "first"
    assert memo.get(second) is None  # equal, but another object


def test_identity_memo_keeps_its_objects_alive_so_ids_are_not_reused() -> None:
    memo: IdentityMemo[object, int] = IdentityMemo(1000)
    for i in range(100):
        memo.put(object(), i)  # each object is dropped by the caller at once
    fresh = [object() for _ in range(100)]
    assert all(memo.get(obj) is None for obj in fresh)


def test_memos_are_bounded() -> None:
    by_key: BoundedMemo[int, int] = BoundedMemo(10)
    by_id: IdentityMemo[object, int] = IdentityMemo(10)
    kept = [object() for _ in range(25)]
    for i, obj in enumerate(kept):
        by_key.put(i, i)
        by_id.put(obj, i)
    assert len(by_key) <= 10 and len(by_id) <= 10
    assert by_key.get(24) == 24 and by_id.get(kept[24]) == 24
    assert by_key.get(0) is None and by_id.get(kept[0]) is None
