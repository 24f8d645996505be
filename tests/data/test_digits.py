"""scikit-learn's digits: shapes, dtypes, ranges, and a fixed stratified split."""

import numpy as np
import pytest
from sklearn.datasets import load_digits as sklearn_load_digits

from jaxmake.data import ArraySplit, load_digits


@pytest.fixture(scope="module")
def digits() -> ArraySplit:
    return load_digits()


def test_shapes_dtypes_and_ranges(digits: ArraySplit) -> None:
    assert digits.x_train.shape == (1437, 8, 8, 1) and digits.x_test.shape == (360, 8, 8, 1)
    assert digits.y_train.shape == (1437,) and digits.y_test.shape == (360,)
    assert digits.x_train.dtype == np.float32 and digits.y_train.dtype == np.int32
    images = np.concatenate([digits.x_train, digits.x_test])
    assert images.min() == 0.0 and images.max() == 1.0
    # Pixels are counts 0..16 divided by 16.
    np.testing.assert_array_equal(images * 16, np.round(images * 16))
    assert set(np.unique(np.concatenate([digits.y_train, digits.y_test])).tolist()) == set(range(10))


def test_split_is_stratified(digits: ArraySplit) -> None:
    counts = np.bincount(np.concatenate([digits.y_train, digits.y_test]), minlength=10)
    test_counts = np.bincount(digits.y_test, minlength=10)
    assert (np.abs(test_counts - 0.2 * counts) <= 1).all(), (test_counts, counts)


def test_split_is_deterministic_and_partitions_the_data(digits: ArraySplit) -> None:
    again = load_digits()
    np.testing.assert_array_equal(digits.x_test, again.x_test)
    np.testing.assert_array_equal(digits.y_train, again.y_train)
    # Train and test together hold every (image, label) of the data set exactly once.
    pixels, labels = sklearn_load_digits(return_X_y=True)
    ours = np.concatenate(
        [
            np.concatenate([digits.x_train, digits.x_test]).reshape(-1, 64) * 16,
            np.concatenate([digits.y_train, digits.y_test])[:, None],
        ],
        axis=1,
    )
    theirs = np.concatenate([pixels, labels[:, None]], axis=1)
    for a, b in zip(np.unique(ours, axis=0, return_counts=True), np.unique(theirs, axis=0, return_counts=True)):
        np.testing.assert_array_equal(a, b)


def test_seed_and_fraction_change_the_split(digits: ArraySplit) -> None:
    other = load_digits(seed=1)
    assert other.x_test.shape == digits.x_test.shape
    assert not np.array_equal(other.x_test, digits.x_test)
    half = load_digits(test_fraction=0.5)
    assert half.x_train.shape[0] == 898 and half.x_test.shape[0] == 899


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 0.99999])
def test_bad_test_fraction(fraction: float) -> None:
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits(test_fraction=fraction)


def test_array_split_checks_alignment() -> None:
    x = np.zeros((4, 2, 2, 1), np.float32)
    y = np.zeros(4, np.int32)
    expected = r"`x_test` and `y_test` must be `\[N, ...\]` and `\[N\]`, got shapes \(4, 2, 2, 1\) and \(3,\)"
    with pytest.raises(ValueError, match=expected):
        ArraySplit(x, y, x, y[:3])
    with pytest.raises(ValueError, match=r"one shape, got \(2, 2, 1\) and \(1, 2, 1\)"):
        ArraySplit(x, y, x[:, :1], y)
