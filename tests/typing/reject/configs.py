"""mypy must report exactly the errors and notes announced at the end of the lines below."""

from tests.affine import Affine


class OnlyNIn:
    @property
    def n_in(self) -> int:
        return 3


class WrongType:
    n_in: str = "3"
    n_out: int = 2
    activation = "relu"


Affine.make(OnlyNIn())  # E: arg-type: Argument 1 to "make" of "Affine" has incompatible type "OnlyNIn"; expected "AffineConfigs"  # N: "OnlyNIn" is missing following "AffineConfigs" protocol members:
Affine(n_in="3", n_out=2)  # E: arg-type: Argument "n_in" to "Affine" has incompatible type "str"; expected "int"
Affine(3, 2, activation="tanh")  # E: arg-type: Argument "activation" to "Affine" has incompatible type "Literal['tanh']"
Affine.make(WrongType())  # E: arg-type: Argument 1 to "make" of "Affine" has incompatible type "WrongType"
Affine(3, 2).n_in = 4  # E: misc: Property "n_in" defined in "Affine" is read-only
