"""Reading jaxtyping annotations: their dims, the shapes they give, the dtypes to build them.

An annotation such as `Float[Array, "*batch T dim_model"]` publishes its shape string as
`dim_str`; `dims_of` parses it with jaxtyping's grammar (whitespace-separated dims, each a
size `3`, a name `T`, a variadic name `*batch`, an anonymous `_` or `...`, an expression
`T-1`, with the modifiers `#` (broadcastable), `?` (tree path), `_name` (unchecked) and
`name=3` (a size)). Nothing here reads jaxtyping's private modules.
"""

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import jax
from jaxtyping import AbstractArray

from jaxmake._errors import JaxMakeError

DimKind = Literal["fixed", "named", "symbolic", "anonymous"]
"""A size (`3`), a name (`T`), an expression of names (`T-1`), or a dim nobody checks (`_`, `...`)."""

_BUILD_DTYPES = ("float32", "int32", "bool", "uint32", "int64", "float64", "float16", "bfloat16", "uint8", "int8")
"""The dtypes abstract inputs are built with, in order of preference among those an annotation allows."""


@dataclass(frozen=True)
class Dim:
    """One dim of an annotation's shape string.

    Args:
        kind: see `DimKind`.
        text: the name, or the expression, or the size as written (`""` when anonymous).
        variadic: whether it stands for any number of axes (`*batch`, `...`).
    """

    kind: DimKind
    text: str = ""
    variadic: bool = False


def is_array_annotation(hint: object) -> bool:
    """Whether `hint` is a jaxtyping array annotation such as `Float[Array, "T d"]`."""
    return isinstance(hint, type) and issubclass(hint, AbstractArray)


def annotation_str(hint: Any) -> str:
    """`Float[Array, "T dim_model"]` for a jaxtyping annotation, the type's name otherwise."""
    if is_array_annotation(hint):
        array_type = hint.array_type
        array_name = "Array" if array_type is jax.Array else getattr(array_type, "__name__", repr(array_type))
        return f'{hint.dtype.__name__}[{array_name}, "{hint.dim_str}"]'
    return getattr(hint, "__name__", repr(hint))


def dims_of(hint: Any) -> tuple[Dim, ...]:
    """The parsed dims of a jaxtyping annotation (`()` for anything else).

    Example:
        >>> from jaxtyping import Array, Float
        >>> [(d.kind, d.text, d.variadic) for d in dims_of(Float[Array, "*batch T-1 3 _"])]
        [('named', 'batch', True), ('symbolic', 'T-1', False), ('fixed', '3', False), ('anonymous', '', False)]
    """
    return _parse(hint.dim_str) if is_array_annotation(hint) else ()


@functools.cache
def _parse(dim_str: str) -> tuple[Dim, ...]:
    return tuple(_parse_one(token) for token in dim_str.split())


def _parse_one(token: str) -> Dim:
    if token == "...":
        return Dim("anonymous", variadic=True)
    variadic = anonymous = False
    while token[:1] in ("#", "*", "_", "?") and token:
        variadic |= token[0] == "*"
        anonymous |= token[0] == "_"
        token = token[1:]
    if token.count("=") == 1:  # `rows=3` is jaxtyping's other spelling of `3`
        token = token.split("=")[1]
    if anonymous:
        return Dim("anonymous", variadic=variadic)
    if token.isidentifier():
        return Dim("named", token, variadic)
    if token.isdigit():
        return Dim("fixed", token)
    return Dim("symbolic", token)


def dim_names(hint: Any, variadic: bool = True) -> list[str]:
    """The names of the named dims of an annotation, variadic ones (`*batch`) included if asked."""
    return [d.text for d in dims_of(hint) if d.kind == "named" and (variadic or not d.variadic)]


def variadic_names(hint: Any) -> list[str]:
    """The names of the variadic named dims of an annotation (`batch` for `*batch`)."""
    return [d.text for d in dims_of(hint) if d.kind == "named" and d.variadic]


def shape_of(
    hint: Any, sizes: Mapping[str, int], batch: Mapping[str, tuple[int, ...]], anonymous: int | None = None
) -> tuple[int, ...] | None:
    """The shape an annotation gives with these sizes; `None` where a dim is not determined.

    Args:
        hint: a jaxtyping annotation.
        sizes: the size of each named dim; expressions (`T-1`) are evaluated with them.
        batch: the axes of each variadic named dim.
        anonymous: if given, the size of every `_`, and `...` takes no axes; if not, neither
            is determined.
    """
    if not is_array_annotation(hint):
        return None
    shape: list[int] = []
    for dim in dims_of(hint):
        if dim.kind == "fixed":
            shape.append(int(dim.text))
        elif dim.kind == "named" and not dim.variadic and dim.text in sizes:
            shape.append(sizes[dim.text])
        elif dim.kind == "named" and dim.variadic and dim.text in batch:
            shape.extend(batch[dim.text])
        elif dim.kind == "symbolic":
            size = _evaluate(dim.text, sizes)
            if size is None:
                return None
            shape.append(size)
        elif dim.kind == "anonymous" and anonymous is not None:
            shape.extend(() if dim.variadic else (anonymous,))
        else:
            return None
    return tuple(shape)


def _evaluate(expression: str, sizes: Mapping[str, int]) -> int | None:
    """An expression dim's size, evaluated as jaxtyping does (with the named sizes); `None` if unknown."""
    try:
        return int(eval(expression, {}, dict(sizes)))
    except NameError:
        return None
    except Exception as error:  # a malformed expression is a bug in the annotation
        raise JaxMakeError(f"the annotation dim `{expression}` cannot be evaluated: {error}") from None


def has_variadic(hint: Any) -> bool:
    """Whether an annotation has a dim that stands for any number of axes."""
    return any(d.variadic for d in dims_of(hint))


def build_dtype(hint: Any) -> str | None:
    """The dtype to build an abstract input of this annotation with, or `None` if none fits."""
    dtypes = hint.dtypes
    if not isinstance(dtypes, list | tuple):  # jaxtyping's "any dtype" marker, as in `Shaped`
        return "float32"
    return next((d for d in _BUILD_DTYPES if d in dtypes), None)


def can_build(hint: object) -> bool:
    """Whether an abstract input can be built for this annotation (an array annotation with a known dtype)."""
    return is_array_annotation(hint) and build_dtype(hint) is not None
