"""Weight specs (`WeightParams`), and the weights trees made from them.

A component declares its weights as a nested dict of `WeightParams` whose keys mirror the
component tree; `make_weights` turns that spec into a nested dict of arrays with exactly
the same keys, shapes and dtypes. Each array depends only on the root key and on its own
path in the tree, so adding, removing or reordering siblings never changes a weight.
"""

import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, get_args

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike

from jaxmake._errors import ConfigError, WeightsError, array_str, checks_own_arguments, value_repr

ArrayGen = Literal["kaiming", "xavier", "normal", "truncated_normal", "embedding", "dropout", "zeros", "ones"]
"""The names of the initialisers; `WeightParams` documents the formula of each."""

_ARRAY_GENS: frozenset[str] = frozenset(get_args(ArrayGen))
_RANDOM_FLOAT_GENS = frozenset({"kaiming", "xavier", "normal", "truncated_normal", "embedding"})


@dataclass(frozen=True)
class WeightParams:
    """The frozen spec of one weight array: everything needed to initialise it.

    Args:
        shape: the array's shape; matrices are stored `[n_in, n_out]` and applied as `x @ w`.
        init: an `ArrayGen` name or a number (a constant fill). With `fan_in` the product
            of all dims but the last (the dim itself for a vector) and `fan_out` the last:

            * `"kaiming"`: normal, std `scale * sqrt(2 / fan_in)` (He et al., 2015);
            * `"xavier"`: normal, std `scale * sqrt(2 / (fan_in + fan_out))` (Glorot and
              Bengio, 2010);
            * `"normal"`: normal, std `scale`;
            * `"truncated_normal"`: normal truncated to two standard deviations, rescaled
              so that its std is `scale`;
            * `"embedding"`: normal, std `scale / sqrt(fan_out)`, so each row (one
              embedding vector) has an expected squared norm of `scale**2`;
            * `"dropout"`: a fixed Bernoulli mask, 1 with probability `scale`, else 0;
            * `"zeros"`, `"ones"`, or a number `c`: the constant `0`, `scale`, `c * scale`.
        scale: multiplies the draw (see `init`).
        dtype: the array's dtype; random normal inits need a floating dtype.
        axes: optional logical axis names, one per dim (`None` for a dim that is never
            sharded), e.g. `("embed", "mlp")`; used to shard the weight on a mesh.
        stack: how many leading dims index independent copies (the layers of a scanned
            encoder, see `stack_params`); `fan_in` and `fan_out` ignore them.

    Raises:
        ConfigError: a field is out of range or inconsistent with another.

    Example:
        >>> WeightParams((3, 4), axes=["embed", "mlp"])
        WeightParams(shape=(3, 4), init='kaiming', scale=1.0, dtype=dtype('float32'), axes=('embed', 'mlp'), stack=0)
    """

    shape: tuple[int, ...]
    init: ArrayGen | float = "kaiming"
    scale: float = 1.0
    dtype: DTypeLike = jnp.float32
    axes: tuple[str | None, ...] | None = None
    stack: int = 0

    def __post_init__(self) -> None:
        shape = tuple(self.shape) if isinstance(self.shape, Sequence) else self.shape
        if not isinstance(shape, tuple) or not all(_is_int(d) and d >= 0 for d in shape):
            raise _error("shape", self.shape, "must be a tuple of non-negative ints")
        object.__setattr__(self, "shape", tuple(int(d) for d in shape))
        if isinstance(self.init, str):
            if self.init not in _ARRAY_GENS:
                raise _error("init", self.init, f"must be a number or one of {sorted(_ARRAY_GENS)}")
        elif isinstance(self.init, bool) or not isinstance(self.init, int | float):
            raise _error("init", self.init, "must be a number or an `ArrayGen` name")
        if isinstance(self.scale, bool) or not isinstance(self.scale, int | float):
            raise _error("scale", self.scale, "must be a number")
        if not math.isfinite(self.scale):
            raise _error("scale", self.scale, "must be finite")
        object.__setattr__(self, "scale", float(self.scale))
        try:
            dtype = jnp.dtype(self.dtype)
        except TypeError:
            raise _error("dtype", self.dtype, "must be a dtype such as `jnp.float32`") from None
        object.__setattr__(self, "dtype", dtype)
        if self.init in _RANDOM_FLOAT_GENS and not jnp.issubdtype(dtype, jnp.floating):
            raise _error("dtype", dtype, f"must be floating for init={self.init!r}")
        if self.init == "dropout" and not 0.0 <= self.scale <= 1.0:
            raise _error("scale", self.scale, "is the keep probability of a dropout mask: in [0, 1]")
        if self.axes is not None:
            axes = tuple(self.axes) if isinstance(self.axes, Sequence) else self.axes
            if not isinstance(axes, tuple) or not all(a is None or isinstance(a, str) for a in axes):
                raise _error("axes", self.axes, "must be a tuple of axis names (str) or None")
            if len(axes) != len(self.shape):
                raise _error("axes", self.axes, f"must name each of the {len(self.shape)} dims of shape={self.shape}")
            object.__setattr__(self, "axes", axes)
        if not _is_int(self.stack) or not 0 <= self.stack <= len(self.shape):
            raise _error("stack", self.stack, f"must be an int in [0, {len(self.shape)}] (the number of dims)")


checks_own_arguments(WeightParams.__init__)  # `__post_init__` checks every field, raising `ConfigError`

if TYPE_CHECKING:
    WeightParamsTree: TypeAlias = Mapping[str, "WeightParams | WeightParamsTree"]
else:  # a runtime checker cannot follow the recursive alias; `check_spec` checks the whole tree
    WeightParamsTree: TypeAlias = Mapping[str, Any]
"""A nested mapping of `WeightParams`: the spec of a weights tree."""

Weights: TypeAlias = dict[str, Any]
"""A nested dict of arrays whose keys mirror the component tree, as `make_weights` returns."""


@checks_own_arguments
def stack_params(weight_params: WeightParamsTree, n: int, axis: str | None = "layers") -> dict[str, Any]:
    """The spec of `n` independent copies of a tree, stacked on a new leading axis.

    Each `WeightParams` gets the leading dim `n` (named `axis` where it names its axes)
    and one more `stack` dim, so that its initial scale is that of one copy. This is the
    layout `jax.lax.scan` runs over.

    Example:
        >>> stack_params({"w": WeightParams((3, 4), axes=("embed", "mlp"))}, 6)["w"]
        WeightParams(shape=(6, 3, 4), init='kaiming', scale=1.0, dtype=dtype('float32'),
                     axes=('layers', 'embed', 'mlp'), stack=1)
    """
    check_spec(weight_params, ())
    return map_params(
        weight_params,
        lambda spec: dataclasses.replace(
            spec,
            shape=(n, *spec.shape),
            axes=None if spec.axes is None else (axis, *spec.axes),
            stack=spec.stack + 1,
        ),
    )


def abstract_weights(weight_params: WeightParamsTree) -> dict[str, Any]:
    """The weights tree as `jax.ShapeDtypeStruct`s: for `jax.eval_shape` and restoring."""
    check_spec(weight_params, ())
    return map_params(weight_params, lambda spec: jax.ShapeDtypeStruct(spec.shape, spec.dtype))


def map_params(tree: WeightParamsTree, fn: Any) -> dict[str, Any]:
    """`fn` applied to every `WeightParams` of a spec tree, keys (and empty dicts) kept."""
    return {name: fn(spec) if isinstance(spec, WeightParams) else map_params(spec, fn) for name, spec in tree.items()}


def param_leaves(tree: WeightParamsTree, prefix: str = "") -> Iterator[tuple[str, WeightParams]]:
    """`(dotted path, spec)` for every `WeightParams` of a spec tree."""
    for name, spec in tree.items():
        if isinstance(spec, WeightParams):
            yield f"{prefix}{name}", spec
        else:
            yield from param_leaves(spec, f"{prefix}{name}.")


@checks_own_arguments
def check_weights(weight_params: WeightParamsTree, weights: Mapping[str, Any]) -> None:
    """Check that a weights tree matches its spec exactly.

    Arrays (or anything with `shape` and `dtype`, such as `jax.ShapeDtypeStruct`) must
    sit at exactly the spec's paths, with the spec's shapes and dtypes.

    Raises:
        WeightsError: listing every missing, extra, mis-shaped and mis-typed path at once.
    """
    problems = list(_weight_problems(weight_params, weights, ()))
    if problems:
        lines = "\n".join(f"  {kind:<12} {_path_str(path)}: {detail}" for kind, path, detail in problems)
        raise WeightsError(
            f"the weights do not match their spec ({len(problems)} problem{'s' if len(problems) > 1 else ''}):\n{lines}"
        )


def _weight_problems(
    spec: WeightParamsTree, tree: Mapping[Any, Any], path: tuple[object, ...]
) -> Iterator[tuple[str, tuple[object, ...], str]]:
    for name, sub_spec in spec.items():
        sub_path = (*path, name)
        if name not in tree:
            yield "missing", sub_path, f"expected {_spec_str(sub_spec)}"
            continue
        value = tree[name]
        if isinstance(sub_spec, WeightParams):
            if not (hasattr(value, "shape") and hasattr(value, "dtype")):
                yield "not an array", sub_path, f"expected {_spec_str(sub_spec)}, got {_value_str(value)}"
            elif tuple(value.shape) != sub_spec.shape:
                yield "wrong shape", sub_path, f"expected {_spec_str(sub_spec)}, got {array_str(value)}"
            elif value.dtype != sub_spec.dtype:
                yield "wrong dtype", sub_path, f"expected {_spec_str(sub_spec)}, got {array_str(value)}"
        elif not isinstance(value, Mapping):
            yield "not a dict", sub_path, f"expected {_spec_str(sub_spec)}, got {_value_str(value)}"
        else:
            yield from _weight_problems(sub_spec, value, sub_path)
    for name in tree:
        if name not in spec:
            yield "extra", (*path, name), _value_str(tree[name])


def _spec_str(spec: "WeightParams | WeightParamsTree") -> str:
    if isinstance(spec, WeightParams):
        return array_str(jax.ShapeDtypeStruct(spec.shape, spec.dtype))
    return _keys_str(spec)


def _value_str(value: object) -> str:
    return _keys_str(value) if isinstance(value, Mapping) else array_str(value)


def check_spec(tree: object, path: tuple[str, ...] = ()) -> None:
    """Raise `WeightsError` unless `tree` holds only `WeightParams` and mappings with str keys."""
    if not isinstance(tree, Mapping):
        where = f"at `{_path_str(path)}`" if path else "at the root"
        raise WeightsError(
            f"a weight spec tree holds `WeightParams` and dicts of them; {where} it holds {_value_str(tree)}"
        )
    for name, spec in tree.items():
        if not isinstance(name, str):
            raise WeightsError(
                f"weight names are strings; `{_path_str(path) or 'the root'}` has the key {value_repr(name)}"
            )
        if not isinstance(spec, WeightParams):
            check_spec(spec, (*path, name))


PathLike: TypeAlias = str | Sequence[str]
"""A path in a tree: `"encoder.norm.a"` or `("encoder", "norm", "a")`."""


@checks_own_arguments
def get_at(tree: Mapping[str, Any], path: PathLike) -> Any:
    """The sub-tree or array at `path` of a weights (or weight spec) tree.

    Raises:
        WeightsError: the path does not exist; says where it stops and what is there.

    Example:
        >>> get_at({"mlp": {"layer_0": {"b": 1.0}}}, "mlp.layer_0.b")
        1.0
    """
    names = _split(path)
    node: Any = tree
    for depth, name in enumerate(names):
        if not isinstance(node, Mapping) or name not in node:
            raise WeightsError(_missing_message(names, depth, node))
        node = node[name]
    return node


@checks_own_arguments
def set_at(tree: Mapping[str, Any], path: PathLike, value: Any) -> dict[str, Any]:
    """A copy of `tree` with the entry at `path` replaced by `value` (nothing is mutated).

    Raises:
        WeightsError: the path does not exist; `set_at` never creates new entries.
    """
    names = _split(path)
    get_at(tree, names)

    def replace(node: Mapping[str, Any], depth: int) -> dict[str, Any]:
        name = names[depth]
        new = value if depth == len(names) - 1 else replace(node[name], depth + 1)
        return {**node, name: new}

    return replace(tree, 0)


def _split(path: PathLike) -> tuple[str, ...]:
    names = tuple(path.split(".")) if isinstance(path, str) else tuple(path)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise WeightsError(f"a path is a dotted string or a sequence of names, got {value_repr(path)}")
    return names


def _missing_message(names: tuple[str, ...], depth: int, node: object) -> str:
    where = f"`{_path_str(names[:depth])}`" if depth else "the root"
    if not isinstance(node, Mapping):
        held = f"is {_value_str(node)}"
    else:
        held = (
            f"holds {', '.join(f'`{_path_str([k])}`' for k in sorted(node, key=value_repr))}"
            if node
            else "is an empty dict"
        )
    return f"no entry `{_path_str(names)}`: {where} {held}"


def _path_str(path: Sequence[object]) -> str:
    """`encoder.norm.a`; a name that is not a string (an error's subject) shown by its repr."""
    return ".".join(name if isinstance(name, str) else value_repr(name) for name in path)


def _keys_str(tree: Mapping[Any, Any]) -> str:
    """`a dict with keys ['a', 'b']` (abbreviated past a few keys; keys of any type), or `an empty dict`."""
    keys = sorted(tree, key=lambda key: (not isinstance(key, str), value_repr(key)))
    return f"a dict with keys {value_repr(keys)}" if keys else "an empty dict"


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _error(field: str, value: object, rule: str) -> ConfigError:
    return ConfigError(f"`WeightParams.{field}`={value_repr(value)} {rule}")
