"""`DataError`: what every function of `jaxmake.data` raises for data or arguments it cannot use."""

import jaxmake as jm


class DataError(jm.JaxMakeError, ValueError):
    """Data that cannot be used as asked: a file that is not text, a batch larger than the data, ...

    The message says what was expected and what was seen, with the numbers.
    """
