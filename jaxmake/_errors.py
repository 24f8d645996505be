"""The errors jaxmake raises. Every one of them is a `JaxMakeError`."""

import math
from collections.abc import Callable
from typing import Any, TypeVar


class JaxMakeError(Exception):
    """Base class of every error that jaxmake raises on purpose."""


class ArgumentError(JaxMakeError, TypeError):
    """A jaxmake function was given an argument of the wrong kind: the message names it and what it takes."""


class ConfigError(JaxMakeError, ValueError):
    """A config field is out of range, of the wrong type, or inconsistent with another.

    The message names the config class, the field, the value and the rule.
    """


class ShapeError(JaxMakeError, TypeError):
    """A shape contract failed, at make time or on a checked call.

    The message names the component path, the process ports, the port, the expected
    annotation, the shape and dtype seen, and the dimension sizes bound so far.
    """


class WeightsError(JaxMakeError, ValueError):
    """A weights tree does not match its spec: lists every missing, extra and wrong path."""


def array_str(value: object) -> str:
    """Describe a value compactly for an error message: `f32[2,50,12]`, `i32[]`, or its type.

    Works on anything with `shape` and `dtype` (jax and numpy arrays, tracers,
    `jax.ShapeDtypeStruct`); other values are named by their type.
    """
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is None or dtype is None:
        return f"a value of type {type(value).__name__}"
    name = str(dtype)
    for long, short in _DTYPE_PREFIXES:
        if name.startswith(long) and name[len(long) :].isdigit():
            name = short + name[len(long) :]
            break
    return f"{name}[{','.join(value_repr(d) for d in shape)}]"


def value_repr(value: object, *, depth: int = 3) -> str:
    """`repr(value)` for an error message: it never fails, and a huge value is abbreviated.

    An integer of more than 30 digits is named by its digit count (`repr` itself fails
    past 4,300 digits), a long string by its start and length, a long tuple or list by
    its first items and length; the items of tuples and lists are abbreviated in turn,
    down to `depth` levels of nesting.

    Example:
        >>> print(value_repr(-(10**4400)), value_repr((7,)), value_repr(list(range(12))))
        -<an integer of 4,401 digits> (7,) [0, 1, 2, 3, 4, 5, 6, 7, ... 12 items]
        >>> print(value_repr("ab" * 100))
        'abababababababababababababababababababab'... (200 characters)
    """
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 100:
        return f"{'-' if value < 0 else ''}<an integer of {_digit_count(abs(value)):,} digits>"
    if isinstance(value, str) and len(value) > 40:
        return f"{value[:40]!r}... ({len(value):,} characters)"
    if isinstance(value, tuple | list) and type(value) in (tuple, list):  # not a named tuple
        if depth == 0:
            return f"<a {type(value).__name__} of {len(value):,} item{'' if len(value) == 1 else 's'}>"
        items = ", ".join(value_repr(item, depth=depth - 1) for item in value[:_MAX_ITEMS])
        if len(value) > _MAX_ITEMS:
            items += f", ... {len(value):,} items"
        elif len(value) == 1 and isinstance(value, tuple):
            items += ","
        return f"({items})" if isinstance(value, tuple) else f"[{items}]"
    try:
        text = repr(value)
    except Exception:  # a repr that fails must not hide the error being reported
        return f"<a {type(value).__name__}>"
    return text if len(text) <= _MAX_REPR else f"{text[:_MAX_REPR]}... ({len(text):,} characters)"


_MAX_ITEMS = 8
_MAX_REPR = 400


def _digit_count(n: int) -> int:
    """The number of decimal digits of `n > 0`, without converting it to a string."""
    digits = int(math.log10(n)) + 1  # float rounding may be off by one near a power of ten
    if n < 10 ** (digits - 1):
        return digits - 1
    return digits + 1 if n >= 10**digits else digits


_DTYPE_PREFIXES = (("bfloat", "bf"), ("float", "f"), ("uint", "u"), ("int", "i"), ("complex", "c"))


_F = TypeVar("_F", bound=Callable[..., Any])


def checks_own_arguments(fn: _F) -> _F:
    """Mark `fn` as checking its own arguments, raising a `JaxMakeError` that names what is wrong.

    A runtime type-checker that honours `__no_type_check__` (jaxtyping's import hook, beartype)
    then leaves `fn`'s arguments to it, instead of pre-empting that error with its own: the
    public entry points (`Config` and `WeightParams` construction, `Component`, `make_ports`,
    `make_weights`, ...) accept what their hints do not say (ints where floats belong, lists
    as tuples) and reject the rest with a message about the argument.
    """
    fn.__no_type_check__ = True  # type: ignore[attr-defined]
    return fn
