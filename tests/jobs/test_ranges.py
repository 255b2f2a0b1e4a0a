"""The fold's range merging on its own: any arrival order, any skips, combines in any order."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from wireframe.jobs.ranges import EMPTY, Combine, RangeMerger


def fold_by_hand(values: list[str | None], arrival: list[int], picks: list[int]) -> tuple[str, int]:
    """Fold ``values`` (None: skipped) through a merger, items arriving in ``arrival``
    order and the outstanding combines run in an order ``picks`` chooses.

    Combining is string concatenation: associative, not commutative, so a
    combine of two ranges that are not adjacent, or in the wrong order, shows.
    Returns the value and the number of combines run.
    """
    merger = RangeMerger()
    outstanding: list[Combine] = []
    runs = 0

    def take(combine: Combine | None) -> None:
        if combine is not None:
            assert combine.left is not EMPTY and combine.right is not EMPTY
            outstanding.append(combine)

    def run_one(pick: int) -> None:
        nonlocal runs
        c = outstanding.pop(pick % len(outstanding))
        runs += 1
        take(merger.combined(c.start, c.end, c.left + c.right))

    for step, index in enumerate(arrival):
        value = values[index]
        take(merger.add(index, index + 1, EMPTY if value is None else value))
        if outstanding and step < len(picks) and picks[step] % 2:
            run_one(picks[step])  # some combines finish while items still arrive
    while outstanding:
        run_one(picks[runs % len(picks)] if picks else 0)
    done, value = merger.whole(len(values))
    assert done and merger.pending == 0
    return ("" if value is EMPTY else value), runs


@st.composite
def folds(draw: st.DrawFn) -> tuple[list[str | None], list[int], list[int]]:
    values = draw(st.lists(st.one_of(st.none(), st.text("abcxyz", min_size=1)), max_size=40))
    arrival = draw(st.permutations(range(len(values))))
    picks = draw(st.lists(st.integers(0, 1000), max_size=80))
    return values, arrival, picks


@given(folds())
def test_any_order_gives_the_values_in_input_order(
    case: tuple[list[str | None], list[int], list[int]],
) -> None:
    values, arrival, picks = case
    value, runs = fold_by_hand(values, arrival, picks)
    kept = [v for v in values if v is not None]
    assert value == "".join(kept)
    assert runs == max(len(kept) - 1, 0)  # one combine per join of two real values


def test_a_range_joins_its_left_neighbour_first() -> None:
    merger = RangeMerger()
    assert merger.add(0, 1, "a") is None
    assert merger.add(2, 3, "c") is None
    assert merger.add(1, 2, "b") == Combine(0, 2, "a", "b")
    assert merger.pending == 1
    assert merger.whole(3) == (False, None)
    assert merger.combined(0, 2, "ab") == Combine(0, 3, "ab", "c")
    assert merger.combined(0, 3, "abc") is None
    assert merger.whole(3) == (True, "abc")


def test_skipped_items_merge_without_a_combine() -> None:
    merger = RangeMerger()
    assert merger.add(1, 2, EMPTY) is None
    assert merger.add(0, 1, "a") is None  # a value next to an empty range: no job
    assert merger.add(2, 3, EMPTY) is None
    assert merger.whole(3) == (True, "a")


def test_all_skipped_or_none_at_all_is_empty() -> None:
    merger = RangeMerger()
    assert merger.add(0, 1, EMPTY) is None and merger.add(1, 2, EMPTY) is None
    assert merger.whole(2) == (True, EMPTY)
    assert RangeMerger().whole(0) == (True, EMPTY)
    assert RangeMerger().whole(1) == (False, None)
