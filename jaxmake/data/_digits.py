"""scikit-learn's handwritten digits: 1,797 images of 8x8 pixels, 10 classes, offline.

The images are the test set of the UCI "Optical Recognition of Handwritten Digits" data set
(E. Alpaydin and C. Kaynak, 1998; distributed by the UCI repository under CC BY 4.0), as
bundled with scikit-learn (BSD-3-Clause) in `sklearn/datasets/data/digits.csv.gz`: nothing
is downloaded. Each pixel counts the set pixels of a 4x4 block of a 32x32 bitmap, so values
are integers in 0..16.
"""

import dataclasses

import numpy as np
import numpy.typing as npt

from jaxmake.data._batching import stratified_split
from jaxmake.data._error import DataError


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class ArraySplit:
    """Labelled examples split into a training and a test set (NumPy arrays on the host).

    Attributes:
        x_train: float32 inputs, shape `[N_train, *example]`.
        y_train: int32 labels, shape `[N_train]`.
        x_test: float32 inputs, shape `[N_test, *example]`.
        y_test: int32 labels, shape `[N_test]`.

    Raises:
        ValueError: inputs and labels disagree on `N`, or train and test on `example`.
    """

    x_train: npt.NDArray[np.float32]
    y_train: npt.NDArray[np.int32]
    x_test: npt.NDArray[np.float32]
    y_test: npt.NDArray[np.int32]

    def __post_init__(self) -> None:
        for side, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if x.ndim < 1 or y.shape != x.shape[:1]:
                raise DataError(
                    f"`x_{side}` and `y_{side}` must be `[N, ...]` and `[N]`, got shapes {x.shape} and {y.shape}."
                )
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DataError(
                f"train and test examples must have one shape, got {self.x_train.shape[1:]} "
                f"and {self.x_test.shape[1:]}."
            )

    def __repr__(self) -> str:
        parts = (f"{name}={array.dtype}{list(array.shape)}" for name, array in vars(self).items())
        return f"ArraySplit({', '.join(parts)})"


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> ArraySplit:
    """Load the digits as `[8, 8, 1]` images in [0, 1], split stratified by class.

    The split is `stratified_split(labels, test_fraction, np.random.default_rng(seed))`:
    fixed for a given `seed`, with every class's test share within one image of
    `test_fraction`. With the defaults, 1,437 training and 360 test images. Within each
    side, images keep scikit-learn's order.

    Args:
        test_fraction: the share of the 1,797 images to hold out, in (0, 1).
        seed: the seed of the split.

    Returns:
        An `ArraySplit`: `x_*` float32 `[N, 8, 8, 1]` (height, width, channel), the pixel
        counts divided by 16; `y_*` int32 `[N]`, the digit, in 0..9.

    Raises:
        ValueError: `test_fraction` is outside (0, 1) or leaves one side empty.

    Example:
        >>> load_digits()
        ArraySplit(x_train=float32[1437, 8, 8, 1], y_train=int32[1437],
                   x_test=float32[360, 8, 8, 1], y_test=int32[360])
    """
    # Imported here: scikit-learn takes about a second to import, and only this loader needs it.
    from sklearn.datasets import load_digits as sklearn_load_digits

    pixels, labels = sklearn_load_digits(return_X_y=True)
    train, test = stratified_split(labels, test_fraction, np.random.default_rng(seed))
    images = (pixels.reshape(-1, 8, 8, 1) / 16).astype(np.float32)
    labels32 = labels.astype(np.int32)
    return ArraySplit(images[train], labels32[train], images[test], labels32[test])
