"""Hypothesis strategies that draw configs from their field types and constraints."""

import dataclasses
import math
import types
from collections.abc import Callable
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import annotated_types as at
from hypothesis import reject
from hypothesis import strategies as st

from jaxmake._config import constraints, field_hints, strip_annotated
from jaxmake._errors import ConfigError

C = TypeVar("C")

SMALL = 6
"""How far above its lower bound an int is drawn: sizes stay tiny so that properties are fast."""
MAX_ITEMS = 3
"""The most items drawn for a variable-length tuple field."""


def configs(cls: type[C], **fixed: Any) -> st.SearchStrategy[C]:
    """Valid configs of `cls`, a `jaxmake.Config` subclass; `fixed` fields are held as given.

    Each other field is drawn from its type (`int`, `float`, `bool`, `str`, `Literal`,
    tuples, unions) within its `annotated_types` constraints, ints within `SMALL` of their
    lower bound. Draws that break a cross-field rule (`validate`) are rejected, so fix the
    fields that make such rules hard to meet by chance.

    Example:
        >>> from jaxmake.components import Mlp
        >>> from hypothesis import given
        >>> @given(configs(Mlp, n_in=3))
        ... def test(config: Mlp) -> None:
        ...     assert config.n_in == 3 and 1 <= config.n_out <= 1 + SMALL
        >>> test()
    """
    fields = {
        name: st.just(fixed[name]) if name in fixed else value_strategy(hint)
        for name, hint in _hints(cls, fixed).items()
    }

    @st.composite
    def draw(draw_: Callable[[st.SearchStrategy[Any]], Any]) -> C:  # a `DrawFn`, which no runtime check can test
        values = {name: draw_(strategy) for name, strategy in fields.items()}
        try:
            return cls(**values)
        except ConfigError:
            reject()

    return draw()


def invalid_configs(cls: type[C], **fixed: Any) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    """`(field, kwargs)`: the fields of a valid config with `field` pushed out of its range.

    Only fields with a constraint (a bound, a `Literal`, a length, a multiple, or such
    constraints on tuple items) can be pushed; `cls(**kwargs)` must raise `ConfigError`
    naming `field`.
    """
    breakable = {
        name: bad
        for name, hint in _hints(cls, fixed).items()
        if name not in fixed and (bad := out_of_range(hint)) is not None
    }
    if not breakable:
        raise ValueError(f"`{cls.__name__}` has no constrained field to push out of range")

    @st.composite
    def draw(draw_: Callable[[st.SearchStrategy[Any]], Any]) -> tuple[str, dict[str, Any]]:
        valid = draw_(configs(cls, **fixed))
        name = draw_(st.sampled_from(sorted(breakable)))
        kwargs = {f.name: getattr(valid, f.name) for f in dataclasses.fields(valid)}
        return name, {**kwargs, name: draw_(breakable[name])}

    return draw()


def _hints(cls: type, fixed: dict[str, Any]) -> dict[str, Any]:
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"`configs` takes a config class (a `jaxmake.Config` subclass), got {cls!r}")
    hints = field_hints(cls)
    unknown = sorted(set(fixed) - set(hints))
    if unknown:
        raise TypeError(f"`{cls.__name__}` has no fields {unknown}; it has {sorted(hints)}")
    return hints


_BOUNDS = (at.Gt, at.Ge, at.Lt, at.Le, at.MultipleOf, at.MinLen, at.MaxLen)
"""The constraints that bound a draw: each a dataclass of one field (`Gt(gt=0)`), named as hypothesis names it."""


def _bounds(hint: Any) -> dict[str, Any]:
    return {
        field.name: getattr(constraint, field.name)
        for constraint in constraints(hint)
        if isinstance(constraint, _BOUNDS)
        for field in dataclasses.fields(constraint)
    }


def value_strategy(hint: Any) -> st.SearchStrategy[Any]:
    """Values of the type `hint` that meet its `annotated_types` constraints."""
    base, bounds = strip_annotated(hint), _bounds(hint)
    origin, args = get_origin(base), get_args(base)
    if base is bool:
        return st.booleans()
    if base is int:
        low = bounds.get("ge", bounds["gt"] + 1 if "gt" in bounds else 0)
        high = bounds.get("le", bounds["lt"] - 1 if "lt" in bounds else low + SMALL)
        step = bounds.get("multiple_of", 1)
        return st.integers(math.ceil(low / step), min(high, low + SMALL * step) // step).map(lambda n: n * step)
    if base is float:
        low = bounds.get("ge", bounds.get("gt", 0.0 if "le" in bounds or "lt" in bounds else -10.0))
        high = bounds.get("le", bounds.get("lt", low + 10.0))
        return st.floats(
            low, min(high, low + 10.0), exclude_min="gt" in bounds, exclude_max="lt" in bounds and high == bounds["lt"]
        )
    if base is str:
        return st.text(min_size=bounds.get("min_length", 0), max_size=bounds.get("max_length", 8))
    if origin is Literal:
        return st.sampled_from(args)
    if origin is tuple and len(args) == 2 and args[1] is ...:
        low = bounds.get("min_length", 0)
        return st.lists(
            value_strategy(args[0]),
            min_size=low,
            max_size=max(low, min(bounds.get("max_length", MAX_ITEMS), MAX_ITEMS)),
        ).map(tuple)
    if origin is tuple:
        return st.tuples(*map(value_strategy, args))
    if origin in (Union, types.UnionType):
        return st.one_of(*map(value_strategy, args))
    if base is type(None):
        return st.none()
    return st.from_type(base)


def out_of_range(hint: Any) -> st.SearchStrategy[Any] | None:
    """Values of the type `hint` that break one of its constraints, or `None` if it has none."""
    base, bounds = strip_annotated(hint), _bounds(hint)
    origin, args = get_origin(base), get_args(base)
    options: list[st.SearchStrategy[Any]] = []
    if origin is Literal and all(isinstance(a, str) for a in args):
        options.append(st.sampled_from([f"not-{a}" for a in args]))
    if base in (int, float):
        cast = int if base is int else float
        if "gt" in bounds:
            options.append(st.just(cast(bounds["gt"])))
        if "ge" in bounds:
            options.append(st.just(cast(bounds["ge"] - 1)))
        if "lt" in bounds:
            options.append(st.just(cast(bounds["lt"])))
        if "le" in bounds:
            options.append(st.just(cast(bounds["le"] + 1)))
        if base is int and bounds.get("multiple_of", 1) > 1:
            options.append(st.just(bounds["multiple_of"] + 1))
    if origin is tuple and len(args) == 2 and args[1] is ...:
        bad_item = out_of_range(args[0])
        if bad_item is not None:
            good = value_strategy(args[0])
            options.append(st.tuples(st.lists(good, max_size=2), bad_item).map(lambda p: (*p[0], p[1])))
    return st.one_of(options) if options else None
