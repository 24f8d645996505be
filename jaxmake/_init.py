"""Drawing weights: `make_weights` turns a spec tree into arrays, optionally sharded.

Each array depends only on the root key and its own path in the tree (the key is folded
with a hash of each name on the path), and is drawn by a small program compiled once per
distinct spec (and sharding), so 24 identical layers compile once.
"""

import functools
import math
import zlib

import jax
import jax.numpy as jnp
import jax.random as jr
from jax import Array
from jax.sharding import Mesh, Sharding

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
        mesh: a device mesh to create the weights on, directly sharded: every array is
            drawn by a program whose outputs carry their `NamedSharding`, so no device
            ever holds more than its shards. The values equal the unsharded ones bit
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
    shardings = None if mesh is None or rules is None else weight_shardings(weight_params, mesh, rules)
    return _make_tree(rng, weight_params, shardings)


def _make_tree(rng: Array, tree: WeightParamsTree, shardings: dict[str, object] | None) -> Weights:
    out: Weights = {}
    for name, spec in tree.items():
        key, sharding = fold_in_name(rng, name), None if shardings is None else shardings[name]
        if isinstance(spec, WeightParams):
            out[name] = _initialiser(spec, sharding)(key)
        else:
            out[name] = _make_tree(key, spec, sharding)  # type: ignore[arg-type]
    return out


def fold_in_name(rng: Array, name: str) -> Array:
    """The key of the sub-tree `name` under `rng`: `rng` folded with a stable hash of `name`."""
    return jr.fold_in(rng, zlib.crc32(name.encode()))


@functools.cache
def _initialiser(spec: WeightParams, sharding: Sharding | None) -> "jax.stages.Wrapped":
    """The compiled drawing of one array: one program per distinct spec and sharding."""
    return jax.jit(functools.partial(_init_array, spec=spec), out_shardings=sharding)


def _init_array(key: Array, spec: WeightParams) -> Array:
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
