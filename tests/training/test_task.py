"""`shuffled_batches`: a deterministic function of the step, a permutation per epoch."""

import numpy as np
import pytest

from jaxmake.training import shuffled_batches


def test_each_epoch_is_a_seeded_permutation() -> None:
    arrays = {"x": np.arange(10) * 10, "y": np.arange(10)}
    batch = shuffled_batches(arrays, batch_size=3, seed=7)  # 3 steps per epoch, 1 example dropped
    for epoch in range(3):
        ys = np.concatenate([batch(3 * epoch + i)["y"] for i in range(3)])
        order = np.random.default_rng((7, epoch)).permutation(10)
        np.testing.assert_array_equal(ys, order[:9])
        np.testing.assert_array_equal(np.concatenate([batch(3 * epoch + i)["x"] for i in range(3)]), ys * 10)
    assert not np.array_equal(batch(0)["y"], batch(3)["y"])  # epochs differ


def test_a_batch_depends_only_on_the_step() -> None:
    arrays = (np.arange(20, dtype=np.float32).reshape(10, 2),)
    first, second = shuffled_batches(arrays, 4, seed=1), shuffled_batches(arrays, 4, seed=1)
    in_order = [first(s) for s in range(6)]
    for step in (5, 0, 3, 3, 1):  # any order, any repetition
        np.testing.assert_array_equal(second(step)[0], in_order[step][0])
    assert not np.array_equal(shuffled_batches(arrays, 4, seed=2)(0)[0], in_order[0][0])


@pytest.mark.parametrize(
    ("arrays", "batch_size", "message"),
    [
        ({"x": np.zeros(4), "y": np.zeros(5)}, 2, r"same leading size N, got \['x'\]: 4, \['y'\]: 5$"),
        ({"x": np.zeros(4)}, 5, r"batch_size=5 must be in \[1, N=4\]"),
        ({"x": np.zeros(4)}, 0, r"batch_size=0 must be in \[1, N=4\]"),
        ({}, 1, r"needs at least one array, got an empty tree$"),
        ({"x": np.float32(1.0)}, 1, r"got \['x'\]: no leading dim$"),
    ],
)
def test_bad_arrays_or_batch_size_raise(arrays: object, batch_size: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        shuffled_batches(arrays, batch_size, seed=0)
