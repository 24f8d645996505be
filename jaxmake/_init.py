"""Drawing weights: `make_weights` turns a spec tree into arrays, optionally sharded.

Each array depends only on the root key and its own path in the tree (the key is folded
with a hash of each name on the path). Without a mesh each array is drawn by a small
program compiled once per distinct spec, so 24 identical layers compile once; on a mesh the
whole tree is drawn by one jitted program whose `out_shardings` are the weights'
shardings (one compile instead of one per distinct spec and sharding).
"""

import functools
import math
import zlib
from collections.abc import Callable

import jax
import jax.numpy as jnp
import jax.random as jr
from jax import Array
from jax.sharding import Mesh

from jaxmake._errors import array_str
from jaxmake._partition import Rules, weight_shardings
from jaxmake._weights import WeightParams, WeightParamsTree, Weights, check_spec

# Standard deviation of a standard normal truncated to [-2, 2].
_TRUNCATED_NORMAL_STD = 0.87962566103423978


def make_weights(
    rng: Array, weight_params: WeightParamsTree, *, mesh: Mesh | None = None, rules: Rules | None = None
) -> Weights:
    """Initialise every weight of a spec tree.

    Args:
        rng: a PRNG key (`jax.random.key(seed)`). The key of each array is `rng` folded
            with each name on its path, so an array depends only on `rng` and its path,
            and `make_weights(fold(rng, "a"), spec["a"])` equals `make_weights(rng, spec)["a"]`.
        weight_params: the spec tree.
        mesh: a device mesh to create the weights on, directly sharded: the tree is
            drawn by one jitted program whose outputs carry their `NamedSharding`s, so no
            device ever holds more than its shards. The values equal the unsharded ones bit
            for bit.
        rules: logical axis name -> mesh axis (see `weight_shardings`); with `mesh`.

    Returns:
        A nested dict of arrays with exactly the keys, shapes and dtypes of the spec;
        empty sub-dicts stay empty dicts.

    Raises:
        WeightsError: the spec tree holds something other than `WeightParams` and mappings.
        ShardingError: a weight cannot be split over the mesh as the rules ask.

    Example:
        >>> spec = {"w": WeightParams((2, 3)), "b": WeightParams((3,), init=0), "dropout": {}}
        >>> weights = make_weights(jax.random.key(0), spec)
        >>> jax.tree.map(jnp.shape, weights)
        {'b': (3,), 'dropout': {}, 'w': (2, 3)}
    """
    if not isinstance(rng, jax.Array):
        raise TypeError(f"`make_weights` takes a PRNG key such as `jax.random.key(0)`, got {array_str(rng)}")
    check_spec(weight_params)
    if (mesh is None) != (rules is None):
        raise TypeError("`make_weights` takes `mesh` and `rules` together")
    if mesh is None or rules is None:
        return _make_tree(rng, weight_params, lambda key, spec: _initialiser(spec)(key))
    shardings = weight_shardings(weight_params, mesh, rules)
    draw_all = jax.jit(lambda key: _make_tree(key, weight_params, _init_array), out_shardings=shardings)
    tree: Weights = draw_all(rng)
    return tree


def _make_tree(rng: Array, tree: WeightParamsTree, draw: Callable[[Array, WeightParams], Array]) -> Weights:
    """`draw(key, spec)` for every spec of the tree, each with its path's key."""
    out: Weights = {}
    for name, spec in tree.items():
        key = fold_in_name(rng, name)
        out[name] = draw(key, spec) if isinstance(spec, WeightParams) else _make_tree(key, spec, draw)
    return out


def fold_in_name(rng: Array, name: str) -> Array:
    """The key of the sub-tree `name` under `rng`: `rng` folded with a stable hash of `name`."""
    return jr.fold_in(rng, zlib.crc32(name.encode()))


@functools.cache
def _initialiser(spec: WeightParams) -> "jax.stages.Wrapped":
    """The compiled drawing of one array: one program per distinct spec."""
    return jax.jit(functools.partial(_init_array, spec=spec))


def _init_array(key: Array, spec: WeightParams) -> Array:
    """One array of `spec`, drawn with `key` (see `WeightParams` for the formulas)."""
    shape, dtype, scale = spec.shape, spec.dtype, spec.scale
    own = shape[spec.stack :]
    fan_in = math.prod(own[:-1]) if len(own) > 1 else math.prod(own)
    fan_out = own[-1] if own else 1
    match spec.init:
        case "kaiming":
            return jr.normal(key, shape, dtype) * (scale * math.sqrt(2 / max(fan_in, 1)))
        case "xavier":
            return jr.normal(key, shape, dtype) * (scale * math.sqrt(2 / max(fan_in + fan_out, 1)))
        case "normal":
            return jr.normal(key, shape, dtype) * scale
        case "truncated_normal":
            draw = jr.truncated_normal(key, -2.0, 2.0, shape, dtype)
            return draw * (scale / _TRUNCATED_NORMAL_STD)
        case "embedding":
            return jr.normal(key, shape, dtype) * (scale / math.sqrt(max(fan_out, 1)))
        case "dropout":
            return jr.bernoulli(key, scale, shape).astype(dtype)
        case "zeros":
            return jnp.zeros(shape, dtype)
        case "ones":
            return jnp.full(shape, scale, dtype)
        case _:
            return jnp.full(shape, spec.init * scale, dtype)
