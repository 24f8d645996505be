"""NumPy plumbing: stratified splits, epochs of batches, next-token windows."""

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from jaxmake.data import batches, contiguous_windows, random_windows, steps_per_epoch, stratified_split


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_stratified_split_partitions_the_indices() -> None:
    labels = np.repeat(np.arange(4), [10, 7, 3, 1])
    train, test = stratified_split(labels, 0.3, _rng())
    assert len(test) == 7  # ceil(0.3 * 21)
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(21))
    assert (np.diff(train) > 0).all() and (np.diff(test) > 0).all()


def test_stratified_split_gives_leftovers_to_the_largest_remainders() -> None:
    # Exact shares 1.8, 0.9, 0.3 of 3: floors 1, 0, 0, and the 2 left over to classes 1 and 0.
    _, test = stratified_split(np.repeat(np.arange(3), [6, 3, 1]), 0.3, _rng())
    assert np.bincount(np.repeat(np.arange(3), [6, 3, 1])[test], minlength=3).tolist() == [2, 1, 0]
    # Ties go to the smaller label.
    _, test = stratified_split(np.arange(4), 0.5, _rng())
    assert test.tolist() == [0, 1]


def test_stratified_split_is_seeded() -> None:
    labels = np.arange(200) % 5
    first = stratified_split(labels, 0.25, _rng(3))
    np.testing.assert_array_equal(first[1], stratified_split(labels, 0.25, _rng(3))[1])
    assert not np.array_equal(first[1], stratified_split(labels, 0.25, _rng(4))[1])


def test_stratified_split_errors() -> None:
    with pytest.raises(ValueError, match=r"`labels` must be a 1-D integer array, got shape \(4,\) and dtype float64"):
        stratified_split(np.zeros(4), 0.5, _rng())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`test_fraction` must be in \(0, 1\), got 0"):
        stratified_split(np.zeros(4, np.int32), 0, _rng())
    with pytest.raises(ValueError, match=r"`test_fraction`=0.9 of 4 examples holds out 4, leaving one side"):
        stratified_split(np.zeros(4, np.int32), 0.9, _rng())


def test_held_out_count_is_not_fooled_by_rounding() -> None:
    # 0.7 * 10 is 7.000000000000001 in floating point.
    assert len(stratified_split(np.zeros(10, np.int32), 0.7, _rng())[1]) == 7


@pytest.mark.parametrize("drop_remainder", [True, False])
def test_every_example_once_per_epoch(drop_remainder: bool) -> None:
    x = np.arange(23 * 2).reshape(23, 2)
    y = np.arange(23)
    got = list(batches((x, y), 5, _rng(), drop_remainder=drop_remainder))
    assert len(got) == steps_per_epoch(23, 5, drop_remainder=drop_remainder)
    assert [b[1].shape[0] for b in got] == ([5] * 4 if drop_remainder else [5] * 4 + [3])
    seen = np.concatenate([by for _, by in got])
    assert len(np.unique(seen)) == len(seen) == (20 if drop_remainder else 23)
    for bx, by in got:
        np.testing.assert_array_equal(bx, x[by])  # aligned across arrays
    assert not np.array_equal(seen, np.arange(len(seen)))  # shuffled


def test_batches_are_deterministic_by_seed() -> None:
    y = np.arange(50)
    first = [b[0] for b in batches((y,), 10, _rng(1))]
    again = [b[0] for b in batches((y,), 10, _rng(1))]
    other = [b[0] for b in batches((y,), 10, _rng(2))]
    np.testing.assert_array_equal(np.stack(first), np.stack(again))
    assert not np.array_equal(np.stack(first), np.stack(other))


def test_batches_draw_and_check_when_called() -> None:
    rng = _rng()
    epoch = batches((np.arange(4),), 2, rng)
    assert rng.bit_generator.state != _rng().bit_generator.state  # the shuffle is drawn already
    assert len(list(epoch)) == 2
    with pytest.raises(ValueError, match=r"`batch_size`=8 is larger than the 4 examples"):
        batches((np.arange(4),), 8, _rng())
    assert [b[0].shape for b in batches((np.arange(4),), 8, _rng(), drop_remainder=False)] == [(4,)]


def test_batches_errors() -> None:
    with pytest.raises(ValueError, match="`arrays` is empty"):
        batches((), 2, _rng())
    with pytest.raises(ValueError, match=r"share a leading dimension, got shapes \(4,\), \(3, 2\)"):
        batches((np.arange(4), np.zeros((3, 2))), 2, _rng())
    with pytest.raises(ValueError, match=r"share a leading dimension, got shapes \(4,\), \(\)"):
        batches((np.arange(4), np.zeros(())), 2, _rng())
    with pytest.raises(ValueError, match="`batch_size` must be at least 1, got 0"):
        batches((np.arange(4),), 0, _rng())
    with pytest.raises(ValueError, match="at least one example, got 0"):
        steps_per_epoch(0, 1)


def test_random_windows_shift_by_one() -> None:
    ids = _rng().integers(0, 50, size=300).astype(np.uint8)
    inputs, targets = random_windows(ids, 16, 64, _rng())
    assert inputs.shape == targets.shape == (64, 16)
    assert inputs.dtype == targets.dtype == np.int32
    np.testing.assert_array_equal(inputs[:, 1:], targets[:, :-1])
    # Every window is a real slice of the stream, and its targets the slice one further on.
    positions = np.arange(300)
    starts, _ = random_windows(positions, 16, 64, _rng())
    np.testing.assert_array_equal(inputs, ids[starts])
    np.testing.assert_array_equal(targets, ids[starts + 1])
    assert starts[:, 0].min() >= 0 and starts[:, -1].max() + 1 <= 299


def test_random_windows_reach_both_ends_and_are_seeded() -> None:
    starts, targets = random_windows(np.arange(10), 8, 200, _rng())
    assert set(starts[:, 0].tolist()) == {0, 1}
    assert targets.max() == 9
    np.testing.assert_array_equal(
        random_windows(np.arange(100), 4, 8, _rng(5))[0], random_windows(np.arange(100), 4, 8, _rng(5))[0]
    )


def test_contiguous_windows_cover_the_stream() -> None:
    inputs, targets = contiguous_windows(np.arange(11), 5)
    assert inputs.tolist() == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    assert targets.tolist() == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]]
    inputs, targets = contiguous_windows(np.arange(10), 5)
    assert inputs.shape == (1, 5) and targets.tolist() == [[1, 2, 3, 4, 5]]


def _random_windows_of_two(ids: npt.NDArray[Any], n_ctx: int) -> object:
    return random_windows(ids, n_ctx, 2, _rng())


@pytest.mark.parametrize("call", [_random_windows_of_two, contiguous_windows])
def test_window_errors(call: Callable[[npt.NDArray[Any], int], object]) -> None:
    with pytest.raises(ValueError, match=r"`n_ctx`=10 needs at least 11 ids \(a window and its next id\), got 10"):
        call(np.arange(10), 10)
    with pytest.raises(ValueError, match="`n_ctx` must be at least 1, got 0"):
        call(np.arange(10), 0)
    with pytest.raises(ValueError, match=r"`ids` must be a 1-D integer array, got shape \(2, 5\)"):
        call(np.zeros((2, 5), np.int32), 2)
    with pytest.raises(ValueError, match=r"dtype float64"):
        call(np.zeros(5), 2)


def test_random_windows_batch_size_error() -> None:
    with pytest.raises(ValueError, match="`batch_size` must be at least 1, got 0"):
        random_windows(np.arange(10), 2, 0, _rng())
