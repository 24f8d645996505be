"""Plain NumPy plumbing between a dataset and a train step: splits, batches, text windows.

Everything here is deterministic given a `np.random.Generator`; nothing touches JAX, so
batches are made on the host while the device runs the previous step.
"""

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

import jaxmake as jm
from jaxmake.data._error import DataError


def _held_out_count(n: int, fraction: float, *, what: str) -> int:
    """The number of held-out examples out of `n`: `ceil(fraction * n)`, as scikit-learn counts.

    Args:
        n: the number of examples.
        fraction: the share to hold out, in (0, 1).
        what: the name of the argument that gave `fraction`, for the error message.

    Returns:
        An integer in `[1, n - 1]`.

    Raises:
        ValueError: `fraction` is outside (0, 1), or leaves one side of the split empty.

    Example:
        >>> _held_out_count(1797, 0.2, what="test_fraction")
        360
    """
    if not 0.0 < fraction < 1.0:
        raise DataError(f"`{what}` must be in (0, 1), got {fraction!r}.")
    # Shrinking by a relative hair keeps `0.7 * 10 = 7.000000000000001` from rounding up to 8.
    count = math.ceil(fraction * n * (1 - 1e-12))
    if not 1 <= count <= n - 1:
        raise DataError(
            f"`{what}`={fraction!r} of {n} examples holds out {count}, leaving one side of the "
            f"split empty; both sides need at least one example."
        )
    return count


@jm.checks_own_arguments
def stratified_split(
    labels: npt.NDArray[np.integer[Any]], test_fraction: float, rng: np.random.Generator
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Split example indices into train and test, keeping each class's share in both.

    The test side has `ceil(test_fraction * N)` indices. Each class gets
    `floor(count * n_test / N)` of them, and the leftover ones go to the classes with the
    largest fractional parts (ties to the smaller label), so every class's test count is
    within one of `test_fraction * count`. Which members of a class are held out is drawn
    from `rng`.

    Args:
        labels: integer class labels, shape `[N]`.
        test_fraction: the share of examples to hold out, in (0, 1).
        rng: the source of randomness; the split is a function of its state.

    Returns:
        `(train_indices, test_indices)`, each sorted ascending, disjoint, and together
        `0..N-1`.

    Raises:
        ValueError: `labels` is not a 1-D integer array, or `test_fraction` leaves a side empty.

    Example:
        >>> train, test = stratified_split(np.array([0, 0, 0, 0, 1, 1]), 0.5, np.random.default_rng(0))
        >>> len(train), len(test), sorted(np.array([0, 0, 0, 0, 1, 1])[test].tolist())
        (3, 3, [0, 0, 1])
    """
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"`labels` must be a 1-D integer array, got shape {labels.shape} and dtype {labels.dtype}.")
    n = labels.shape[0]
    n_test = _held_out_count(n, test_fraction, what="test_fraction")
    classes, counts = np.unique(labels, return_counts=True)
    per_class = counts * n_test // n
    leftover = n_test - int(per_class.sum())
    by_remainder = np.argsort(-(counts * n_test % n), kind="stable")
    per_class[by_remainder[:leftover]] += 1
    test = np.concatenate(
        [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, per_class, strict=True)]
    )
    is_test = np.zeros(n, dtype=bool)
    is_test[test] = True
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def steps_per_epoch(n: int, batch_size: int, *, drop_remainder: bool = True) -> int:
    """The number of batches `batches` yields for `n` examples: `n // batch_size`, or rounded up.

    Args:
        n: the number of examples, at least 1.
        batch_size: examples per batch, at least 1.
        drop_remainder: whether a last, smaller batch is dropped.

    Returns:
        The number of batches in one epoch, at least 1.

    Raises:
        ValueError: `n` or `batch_size` is below 1, or `batch_size > n` with `drop_remainder`.

    Example:
        >>> steps_per_epoch(1437, 64), steps_per_epoch(1437, 64, drop_remainder=False)
        (22, 23)
    """
    if n < 1:
        raise DataError(f"there must be at least one example, got {n}.")
    if batch_size < 1:
        raise DataError(f"`batch_size` must be at least 1, got {batch_size}.")
    if drop_remainder and batch_size > n:
        raise DataError(
            f"`batch_size`={batch_size} is larger than the {n} examples, so dropping the remainder "
            f"leaves no batch; lower `batch_size` or pass `drop_remainder=False`."
        )
    return n // batch_size if drop_remainder else -(-n // batch_size)


@jm.checks_own_arguments
def batches(
    arrays: Sequence[npt.NDArray[Any]],
    batch_size: int,
    rng: np.random.Generator,
    *,
    drop_remainder: bool = True,
) -> Iterator[tuple[npt.NDArray[Any], ...]]:
    """One epoch of shuffled batches of aligned arrays (inputs and labels, say).

    The arguments are checked, and the permutation is drawn from `rng`, when `batches` is
    called, not when the first batch is taken.

    Args:
        arrays: arrays sharing a leading dimension `N`: shapes `[N, ...]`.
        batch_size: examples per batch, at least 1.
        rng: the source of the shuffle.
        drop_remainder: drop the last batch if it is smaller than `batch_size` (every step
            then has the same shapes, so a jitted step compiles once). With `False`, the last
            batch holds the remaining `N % batch_size` examples and `batch_size` may exceed `N`.

    Returns:
        An iterator of `steps_per_epoch(N, batch_size, drop_remainder=...)` tuples; each
        tuple holds one batch `[batch_size, ...]` of each array, in the order given, taken
        at the same indices. Each example appears at most once per epoch, and exactly once
        unless dropped with the remainder.

    Raises:
        ValueError: no arrays, arrays with different leading sizes, or a bad `batch_size`.

    Example:
        >>> x, y = np.arange(10).reshape(5, 2), np.arange(5)
        >>> for bx, by in batches((x, y), 2, np.random.default_rng(0)):
        ...     assert (bx[:, 0] == 2 * by).all()
        ...     print(bx.shape, by.shape)
        (2, 2) (2,)
        (2, 2) (2,)
    """
    if not arrays:
        raise DataError("`arrays` is empty; give at least one array to batch.")
    sizes = [a.shape[0] if a.ndim else None for a in arrays]
    if None in sizes or len(set(sizes)) != 1:
        shapes = ", ".join(str(a.shape) for a in arrays)
        raise DataError(f"`arrays` must share a leading dimension, got shapes {shapes}.")
    n = arrays[0].shape[0]
    n_batches = steps_per_epoch(n, batch_size, drop_remainder=drop_remainder)
    order = rng.permutation(n)
    return (tuple(a[order[i * batch_size : (i + 1) * batch_size]] for a in arrays) for i in range(n_batches))


def _check_windows(ids: npt.NDArray[Any], n_ctx: int) -> None:
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise DataError(f"`ids` must be a 1-D integer array, got shape {ids.shape} and dtype {ids.dtype}.")
    if n_ctx < 1:
        raise DataError(f"`n_ctx` must be at least 1, got {n_ctx}.")
    if n_ctx >= ids.shape[0]:
        raise DataError(
            f"`n_ctx`={n_ctx} needs at least {n_ctx + 1} ids (a window and its next id), got {ids.shape[0]}."
        )


@jm.checks_own_arguments
def random_windows(
    ids: npt.NDArray[np.integer[Any]], n_ctx: int, batch_size: int, rng: np.random.Generator
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32]]:
    """A batch of next-token windows at random offsets of a token stream.

    Offsets are drawn uniformly, with replacement, from every position that leaves room
    for the targets: `0 .. len(ids) - n_ctx - 1`.

    Args:
        ids: token ids, shape `[L]` with `L > n_ctx`.
        n_ctx: tokens per window, at least 1.
        batch_size: windows per batch, at least 1.
        rng: the source of the offsets.

    Returns:
        `(inputs, targets)`, both int32 of shape `[batch_size, n_ctx]`, where
        `targets[b, t] == inputs[b, t + 1]` for `t < n_ctx - 1`: each target is the id that
        follows its input.

    Raises:
        ValueError: `ids` is not a 1-D integer array, `n_ctx >= len(ids)`, or a size below 1.

    Example:
        >>> inputs, targets = random_windows(np.arange(100), 8, 4, np.random.default_rng(0))
        >>> inputs.shape, targets.dtype, bool((targets == inputs + 1).all())
        ((4, 8), dtype('int32'), True)
    """
    _check_windows(ids, n_ctx)
    if batch_size < 1:
        raise DataError(f"`batch_size` must be at least 1, got {batch_size}.")
    starts = rng.integers(0, ids.shape[0] - n_ctx, size=batch_size)
    index = starts[:, None] + np.arange(n_ctx)
    return ids[index].astype(np.int32), ids[index + 1].astype(np.int32)


@jm.checks_own_arguments
def contiguous_windows(
    ids: npt.NDArray[np.integer[Any]], n_ctx: int
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32]]:
    """Every non-overlapping next-token window of a token stream, in order: for evaluation.

    Window `w` reads `ids[w * n_ctx : (w + 1) * n_ctx]` and predicts the ids one further on,
    so the targets cover `ids[1 : W * n_ctx + 1]` once each, with `W = (L - 1) // n_ctx`;
    the last `(L - 1) % n_ctx` targets are left out. Batch the result with
    `batches(..., drop_remainder=False)` for a deterministic validation loss.

    Args:
        ids: token ids, shape `[L]` with `L > n_ctx`.
        n_ctx: tokens per window, at least 1.

    Returns:
        `(inputs, targets)`, both int32 of shape `[W, n_ctx]`.

    Raises:
        ValueError: `ids` is not a 1-D integer array, `n_ctx < 1` or `n_ctx >= len(ids)`.

    Example:
        >>> inputs, targets = contiguous_windows(np.arange(10), 3)
        >>> inputs.tolist(), targets.tolist()
        ([[0, 1, 2], [3, 4, 5], [6, 7, 8]], [[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    """
    _check_windows(ids, n_ctx)
    n_windows = (ids.shape[0] - 1) // n_ctx
    used = n_windows * n_ctx
    return (
        ids[:used].reshape(n_windows, n_ctx).astype(np.int32),
        ids[1 : used + 1].reshape(n_windows, n_ctx).astype(np.int32),
    )
