"""The errors jaxmake raises. Every one of them is a `JaxMakeError`."""

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
    return f"{name}[{','.join(str(d) for d in shape)}]"


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
