"""The config pattern: frozen dataclasses that validate themselves on construction.

Subclass `Config` and declare fields with types; constraints go in `Annotated` metadata
from `annotated_types` (`Annotated[int, Ge(1)]`), which hypothesis also reads when it
draws configs. Construction then

* turns a list given for a tuple field into a tuple,
* type-checks every field with beartype (an `int` is accepted where a `float` belongs),
* checks every `annotated_types` constraint, inside tuple items too,
* runs `validate` for rules that tie several fields together,

and raises `ConfigError` naming the class, the field, the value and the rule. A `make`
classmethod called outside any `scope` runs inside `scope(ClassName)`, so that the
component's errors name it (`Linear`, `Vit.encoder.mha`).

Example:
    >>> from typing import Annotated
    >>> from annotated_types import Ge
    >>> class Affine(Config):
    ...     n_in: Annotated[int, Ge(1)]
    ...     n_out: Annotated[int, Ge(1)] = 1
    >>> Affine(3)
    Affine(n_in=3, n_out=1)
    >>> Affine(0)
    Traceback (most recent call last):
    ...
    jaxmake._errors.ConfigError: `Affine.n_in`=0 must be >= 1
"""

import dataclasses
import functools
import typing
from collections.abc import Callable, Iterable
from typing import Annotated, Any, ClassVar, Literal, dataclass_transform, get_args, get_origin

import annotated_types as at
from beartype import BeartypeConf
from beartype.door import is_bearable

from jaxmake._component import current_path, scope
from jaxmake._errors import ConfigError, checks_own_arguments, value_repr

_BEARTYPE = BeartypeConf(is_pep484_tower=True)


@dataclass_transform(frozen_default=True)
class Config:
    """Base class of configs: every subclass is a frozen dataclass that validates itself.

    Raises:
        ConfigError: a field has the wrong type, breaks a declared constraint, or breaks
            a rule of `validate`.
    """

    # Declared for type checkers: every subclass is a dataclass (`dataclasses.fields` works).
    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        dataclasses.dataclass(frozen=True, repr=False)(cls)
        checks_own_arguments(cls.__init__)  # `__post_init__` checks every field, raising `ConfigError`
        make = cls.__dict__.get("make")
        if isinstance(make, classmethod):
            cls.make = classmethod(_scoped_by_class(make.__func__))  # type: ignore[attr-defined]

    def __post_init__(self) -> None:
        for name, hint in field_hints(type(self)).items():
            value = getattr(self, name)
            if isinstance(value, list) and get_origin(strip_annotated(hint)) is tuple:
                value = tuple(value)
                object.__setattr__(self, name, value)
            rule = violation(value, hint)
            if rule:
                raise self.error(name, rule)
        self.validate()

    def validate(self) -> None:
        """Check rules that tie fields together; override and `raise self.error(...)`.

        The base class has no such rules, so this checks nothing.
        """

    def error(self, field: str, rule: str) -> ConfigError:
        """A `ConfigError` for `field`: "`Class.field`=value rule" (a huge value abbreviated)."""
        return ConfigError(f"`{type(self).__name__}.{field}`={value_repr(getattr(self, field))} {rule}")

    def __repr__(self) -> str:
        """`Class(field=value, ...)`, as a dataclass shows itself, huge values abbreviated (see `value_repr`).

        The fields come in the order of the call: positional ones first, then keyword-only
        ones (which a base class may declare before the subclass's own).
        """
        ordered = sorted(dataclasses.fields(self), key=lambda f: f.kw_only is True)
        fields = (f"{f.name}={value_repr(getattr(self, f.name))}" for f in ordered if f.repr)
        return f"{type(self).__name__}({', '.join(fields)})"


def _scoped_by_class(make: Callable[..., Any]) -> Callable[..., Any]:
    """`make`, run inside `scope(cls.__name__)` when no scope is open (a top-level component)."""

    @functools.wraps(make)
    def scoped(cls: type, *args: Any, **kwargs: Any) -> Any:
        if current_path():
            return make(cls, *args, **kwargs)
        with scope(cls.__name__):
            return make(cls, *args, **kwargs)

    return scoped


_FIELD_HINTS: dict[type, dict[str, Any]] = {}


def field_hints(cls: type) -> dict[str, Any]:
    """The type hints of a dataclass's fields, `Annotated` metadata kept."""
    if cls not in _FIELD_HINTS:
        hints = typing.get_type_hints(cls, include_extras=True)
        _FIELD_HINTS[cls] = {f.name: hints[f.name] for f in dataclasses.fields(cls)}
    return _FIELD_HINTS[cls]


def violation(value: object, hint: Any) -> str:
    """The rule that `value` breaks under `hint` (type and constraints), or `""`.

    Tuples are checked item by item here (beartype would check a random sample of the
    items); every other type is checked by beartype.
    """
    base = strip_annotated(hint)
    args = get_args(base)
    if get_origin(base) is tuple:
        variadic = len(args) == 2 and args[1] is ...
        if not isinstance(value, tuple) or (not variadic and len(value) != len(args)):
            return f"must be of type {_type_name(base)}, got {_value_type(value)}"
        for index, (item, item_hint) in enumerate(zip(value, args[:1] * len(value) if variadic else args)):
            rule = violation(item, item_hint)
            if rule:
                return f"item {index}: {rule}"
    elif isinstance(value, bool) and base in (int, float):
        return f"must be {base.__name__}, got a bool"
    elif not is_bearable(value, base, conf=_BEARTYPE):
        if get_origin(base) is Literal:
            return f"must be one of {', '.join(map(repr, args))}"
        return f"must be of type {_type_name(base)}, got {_value_type(value)}"
    for constraint in constraints(hint):
        rule = _broken(value, constraint)
        if rule:
            return rule
    return ""


def _value_type(value: object) -> str:
    return f"a tuple of {len(value)}" if isinstance(value, tuple) else type(value).__name__


def strip_annotated(hint: Any) -> Any:
    """`X` for `Annotated[X, ...]`, the hint itself otherwise."""
    return get_args(hint)[0] if get_origin(hint) is Annotated else hint


def constraints(hint: Any) -> Iterable[Any]:
    """The `annotated_types` constraints of an `Annotated` hint, groups such as `Interval` expanded."""
    if get_origin(hint) is not Annotated:
        return
    for meta in get_args(hint)[1:]:
        yield from (meta if isinstance(meta, at.GroupedMetadata) else (meta,))


def _broken(value: Any, constraint: Any) -> str:
    match constraint:
        case at.Gt(gt=bound) if not value > bound:
            return f"must be > {bound}"
        case at.Ge(ge=bound) if not value >= bound:
            return f"must be >= {bound}"
        case at.Lt(lt=bound) if not value < bound:
            return f"must be < {bound}"
        case at.Le(le=bound) if not value <= bound:
            return f"must be <= {bound}"
        case at.MultipleOf(multiple_of=step) if value % step != 0:
            return f"must be a multiple of {step}"
        case at.MinLen(min_length=n) if len(value) < n:
            return f"must have at least {n} items"
        case at.MaxLen(max_length=n) if len(value) > n:
            return f"must have at most {n} items"
        case at.Predicate(func=func) if not func(value):
            return f"must satisfy `{getattr(func, '__name__', func)}`"
    return ""


def _type_name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else repr(hint).replace("typing.", "")
