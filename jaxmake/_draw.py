"""Drawing weights: `make_weights` turns a spec tree into arrays, optionally sharded.

Each array depends only on the root key and its own path in the tree: its key is the root
key folded with a hash of each name on the path (`fold_in_name`), so adding, removing or
reordering siblings changes no weight.

One jitted program draws the whole tree: it derives every array's key (all leaves folded
together, one tree level per step of a loop) and draws every array, so a warm call is one
dispatch and a cold one is one trace and one compile, as for a hand-written init under
`jax.jit`. The programs are cached (the last `_PROGRAMS_CACHED`) by the tree's frozen form,
its names in order and its `WeightParams`, and, on a mesh, by the weights' `NamedSharding`s,
which are the program's `out_shardings`, so that no device ever holds more than its shards.
An equal spec tree built anew reuses the compiled program. The values are bit for bit those
of drawing each array by itself with its path's key, sharded or not, from a typed
(`jax.random.key`) or a raw (`jax.random.PRNGKey`) key.
"""

import functools
import math
import os
import zlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeAlias

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax import Array
from jax.sharding import Mesh, Sharding

from jaxmake._errors import ArgumentError, WeightsError, array_str, checks_own_arguments
from jaxmake._partition import Rules, weight_shardings
from jaxmake._weights import WeightParams, WeightParamsTree, Weights, check_spec, param_leaves

# Standard deviation of a standard normal truncated to [-2, 2].
_TRUNCATED_NORMAL_STD = 0.87962566103423978

FrozenTree: TypeAlias = tuple[tuple[str, Any], ...]
"""A spec tree as `(name, WeightParams or FrozenTree)` pairs, in the tree's order: hashable.

(Not spelt recursively: runtime type-checkers cannot resolve a recursive alias.)"""

_PROGRAMS_CACHED = 64
"""How many compiled drawings (spec tree and layout) `_program` keeps."""


@checks_own_arguments
def make_weights(
    rng: Array, weight_params: WeightParamsTree, *, mesh: Mesh | None = None, rules: Rules | None = None
) -> Weights:
    """Initialise every weight of a spec tree.

    Args:
        rng: one PRNG key, `jax.random.key(seed)` (or a raw `jax.random.PRNGKey(seed)`). The
            key of each array is `rng` folded with each name on its path, so an array depends
            only on `rng` and its path, and `make_weights(fold_in_name(rng, "a"), spec["a"])`
            equals `make_weights(rng, spec)["a"]`.
        weight_params: the spec tree.
        mesh: a device mesh to create the weights on, directly sharded: the program's
            outputs carry their `NamedSharding`s, so no device ever holds more than its
            shards. The values equal the unsharded ones bit for bit.
        rules: logical axis name -> mesh axis (see `weight_shardings`); with `mesh`.

    Returns:
        A nested dict of arrays with exactly the keys (in the spec's order), shapes and
        dtypes of the spec; empty sub-dicts stay empty dicts.

    Raises:
        ArgumentError: `rng` is not one PRNG key, or only one of `mesh` and `rules` is given.
        WeightsError: the spec tree holds something other than `WeightParams` and mappings,
            or the weights cannot fit in the memory of the devices they would be made on
            (before anything is allocated: the bytes each device would hold, against the
            device's memory limit, or the machine's memory for CPU devices).
        ShardingError: a weight cannot be split over the mesh as the rules ask.

    Example:
        >>> spec = {"w": WeightParams((2, 3)), "b": WeightParams((3,), init=0), "dropout": {}}
        >>> weights = make_weights(jax.random.key(0), spec)
        >>> list(weights), weights["w"].shape, weights["dropout"]
        (['w', 'b', 'dropout'], (2, 3), {})
    """
    _check_key(rng)
    check_spec(weight_params)
    if mesh is None and rules is None:
        return _program(_frozen(weight_params), None)(rng)
    if mesh is None or rules is None:
        given, missing = ("mesh", "rules") if rules is None else ("rules", "mesh")
        raise ArgumentError(f"`make_weights` takes `mesh` and `rules` together; got `{given}` but no `{missing}`")
    shardings = tuple(_leaves(weight_shardings(weight_params, mesh, rules)))
    return _program(_frozen(weight_params), shardings)(rng)


@checks_own_arguments
def make_state(state_params: WeightParamsTree, *, mesh: Mesh | None = None, rules: Rules | None = None) -> Weights:
    """The initial state of a component: the arrays of its `state_params`, which take no key.

    State (BatchNorm's running mean and variance) starts from constants: every init must
    be `"zeros"`, `"ones"` or a number.

    Args:
        state_params: the state spec, `component.state_params`.
        mesh, rules: as for `make_weights`.

    Returns:
        A nested dict of arrays with the keys, shapes and dtypes of the spec.

    Raises:
        WeightsError: an init is random, naming its path; or as `make_weights`.

    Example:
        >>> make_state({"bn": {"mean": WeightParams((3,), init="zeros"), "var": WeightParams((3,), init="ones")}})
        {'bn': {'mean': Array([0., 0., 0.], dtype=float32), 'var': Array([1., 1., 1.], dtype=float32)}}
    """
    check_spec(state_params)
    random = [
        path
        for path, spec in param_leaves(state_params)
        if spec.init not in ("zeros", "ones") and isinstance(spec.init, str)
    ]
    if random:
        raise WeightsError(
            f"state starts from constants (init 'zeros', 'ones' or a number), but {random} "
            f"{'has' if len(random) == 1 else 'have'} a random init; put random arrays in `weight_params`"
        )
    return make_weights(jr.key(0), state_params, mesh=mesh, rules=rules)


def _check_fits(specs: tuple[WeightParams, ...], shardings: tuple[Sharding, ...] | None) -> None:
    """Raise `WeightsError` if the arrays of `specs` (placed by `shardings`) cannot fit in their devices' memory.

    Each device would hold its shard of every array (the whole array without `shardings`,
    on the default device). A device's memory is its `bytes_limit` where it reports one
    (GPUs, TPUs); CPU devices share the machine's physical memory. Devices that report
    neither are not checked.
    """
    if shardings is None:
        devices, shard_shapes = [jax.devices()[0]], [spec.shape for spec in specs]
    else:
        devices = list(shardings[0].addressable_devices) if shardings else []
        shard_shapes = [sharding.shard_shape(spec.shape) for spec, sharding in zip(specs, shardings)]
    per_device = sum(math.prod(shape) * np.dtype(spec.dtype).itemsize for shape, spec in zip(shard_shapes, specs))
    if not devices or per_device == 0:
        return
    if devices[0].platform == "cpu":  # the CPU devices share the machine's memory
        needed, available = per_device * len(devices), _physical_memory()
        where, advice = "this machine's {} of memory (its CPU devices share it)", "shrink the model"
    else:
        needed, available = per_device, _bytes_limit(devices[0])
        where, advice = f"the {{}} of memory of device {devices[0]}", "shrink the model or split it over more devices"
    if available is not None and needed > available:
        params = sum(math.prod(spec.shape) for spec in specs)
        raise WeightsError(
            f"the weights ({params:,} parameters) need {_bytes_str(needed)}, more than "
            f"{where.format(_bytes_str(available))}: {advice}"
        )


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not a POSIX system that reports it
        return None


def _bytes_limit(device: Any) -> int | None:
    stats = device.memory_stats()
    limit = stats.get("bytes_limit") if stats else None
    return int(limit) if limit else None


def _bytes_str(n_bytes: int) -> str:
    """`128 B`, `3.0 KiB`, `256.0 GiB`, ..."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n_bytes < 1024:
            return f"{n_bytes} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024  # type: ignore[assignment]
    return f"{n_bytes:,.1f} TiB"


def fold_in_name(rng: Array, name: str) -> Array:
    """The key of the sub-tree `name` under `rng`: `rng` folded with a stable hash of `name`."""
    return jr.fold_in(rng, _name_hash(name))


def _name_hash(name: str) -> int:
    """The stable 32-bit hash of a name that keys are folded with (CRC-32 of its UTF-8 bytes)."""
    return zlib.crc32(name.encode())


def _check_key(rng: object) -> None:
    """Raise `ArgumentError` unless `rng` is one typed key `key<impl>[]` or one raw key `u32[n]`."""
    if isinstance(rng, jax.Array):
        if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key) and rng.ndim == 0:
            return
        if rng.dtype == jnp.uint32 and rng.ndim == 1:
            return
    raise ArgumentError(
        "`make_weights` takes one PRNG key, such as `jax.random.key(0)` (key<fry>[]) "
        f"or `jax.random.PRNGKey(0)` (u32[2]), got {array_str(rng)}"
    )


def _frozen(tree: WeightParamsTree) -> FrozenTree:
    """The hashable form of a (checked) spec tree: `{"a": {"w": p}}` -> `(("a", (("w", p),)),)`."""
    return tuple((name, spec if isinstance(spec, WeightParams) else _frozen(spec)) for name, spec in tree.items())


def _leaves(tree: Mapping[str, Any]) -> Iterator[Any]:
    """The leaves of a nested dict, depth first in the dicts' order: the order of the drawn arrays."""
    for value in tree.values():
        if isinstance(value, Mapping):
            yield from _leaves(value)
        else:
            yield value


@functools.lru_cache(maxsize=_PROGRAMS_CACHED)
def _program(tree: FrozenTree, shardings: tuple[Sharding, ...] | None) -> Callable[[Array], Weights]:
    """`rng -> weights` for one spec tree: one jitted program draws every array.

    `shardings` (one per array, in `_leaves` order) become the program's `out_shardings`;
    `None` leaves the arrays on the default device. The arrays are checked to fit in the
    devices' memory here, once per program, not on every call.
    """
    leaves = list(_leaf_paths(tree))
    specs = tuple(spec for _, spec in leaves)
    _check_fits(specs, shardings)
    hashes, depths = _path_table([path for path, _ in leaves])
    draw = functools.partial(_draw_leaves, specs=specs, hashes=hashes, depths=depths)
    jitted = jax.jit(draw) if shardings is None else jax.jit(draw, out_shardings=shardings)
    return lambda rng: _unflatten(tree, iter(jitted(rng)))


def _leaf_paths(tree: FrozenTree, path: tuple[int, ...] = ()) -> Iterator[tuple[tuple[int, ...], WeightParams]]:
    """`(name hashes on the path, spec)` of every leaf, depth first (the order of `_leaves`)."""
    for name, spec in tree:
        sub_path = (*path, _name_hash(name))
        if isinstance(spec, WeightParams):
            yield sub_path, spec
        else:
            yield from _leaf_paths(spec, sub_path)


def _path_table(paths: list[tuple[int, ...]]) -> tuple[np.ndarray, np.ndarray]:
    """`n` paths as `hashes: u32[max depth, n]` (zero past a path's end) and `depths: i32[n]`."""
    depths = np.array([len(path) for path in paths], np.int32)
    hashes = np.zeros((max(depths, default=0), len(paths)), np.uint32)
    for leaf, path in enumerate(paths):
        hashes[: len(path), leaf] = path
    return hashes, depths


def _draw_leaves(
    rng: Array, specs: tuple[WeightParams, ...], hashes: np.ndarray, depths: np.ndarray
) -> tuple[Array, ...]:
    """The `n` arrays of `specs` (`specs[i].shape` each), drawn with `rng` folded along each one's path.

    `hashes: u32[max depth, n]` and `depths: i32[n]` are the paths (see `_path_table`).
    """
    if not specs:
        return ()
    if not jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
        rng = jr.wrap_key_data(rng)  # what `jax.random` does with a raw key
    keys = _leaf_keys(rng, hashes, depths)
    return tuple(_init_array(keys[leaf], spec) for leaf, spec in enumerate(specs))


def _leaf_keys(rng: Array, hashes: np.ndarray, depths: np.ndarray) -> Array:
    """`key[n]`: leaf `i`'s key is `rng` folded in turn with `hashes[:depths[i], i]`, as by `fold_in_name`.

    The leaves are folded together, one level per step of a loop: the program holds one
    batched `fold_in` however many nodes the tree has.
    """

    def fold_level(level: Array, keys: Array) -> Array:
        folded = jax.vmap(jr.fold_in)(keys, jnp.asarray(hashes)[level])
        return jnp.where(level < depths, folded, keys)  # a leaf whose path has ended keeps its key

    keys: Array = jax.lax.fori_loop(0, hashes.shape[0], fold_level, jnp.broadcast_to(rng, depths.shape))
    return keys


def _unflatten(tree: FrozenTree, arrays: Iterator[Array]) -> Weights:
    """The nested dict of `tree`'s names holding `arrays` (in `_leaves` order); empty sub-trees stay `{}`."""
    return {name: next(arrays) if isinstance(spec, WeightParams) else _unflatten(spec, arrays) for name, spec in tree}


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
