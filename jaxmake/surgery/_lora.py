"""LoRA (Hu et al., 2021, "LoRA: Low-Rank Adaptation of Large Language Models") as model surgery.

`lora` works on weights, not on code: each targeted `Linear` group (`w: [..., n_in, n_out]`)
gets two new weights beside `w`, `lora_a: [..., n_in, rank]` and `lora_b: [..., rank, n_out]`,
and every process of the new component is the old process run on weights whose `w` is
replaced by `w + lora_a @ lora_b * scale`. So it adapts any component and every one of its
processes, stacked (`scan_layers`) layers included, and the new component's contracts are
checked at make time like any other's.
"""

import math
from collections.abc import Iterable, Mapping
from typing import Any

import jax.numpy as jnp
from jax import Array

import jaxmake as jm

LORA_A = "lora_a"
"""The key of the down projection `[..., n_in, rank]` beside a targeted `w`."""
LORA_B = "lora_b"
"""The key of the up projection `[..., rank, n_out]` beside a targeted `w` (zeros at first)."""

FREEZE_BASE: tuple[str, ...] = ("*", f"!*.{LORA_A}", f"!*.{LORA_B}")
"""`TrainConfig(freeze=FREEZE_BASE)` trains the adapters only: everything is frozen except them."""

_NOT_LINEAR = (
    "LoRA adapts `Linear` layers: groups holding a matrix `w: [n_in, n_out]` (stacked layers: "
    "`[n_layers, n_in, n_out]`), such as `*.mha.kqv` or `encoder.*.mlp.*`"
)


@jm.checks_own_arguments
def lora(
    component: jm.Component, patterns: str | Iterable[str], rank: int, *, alpha: float | None = None
) -> jm.Component:
    """The component with a low-rank adapter on each `Linear` that `patterns` select.

    Every targeted group (one holding a matrix `w: [..., n_in, n_out]`, whose leading dims,
    if any, are stacked copies, as `scan_layers` makes) gets `lora_a: [..., n_in, rank]`
    (normal, std `1 / sqrt(n_in)`) and `lora_b: [..., rank, n_out]` (zeros) beside `w`,
    with `w`'s dtype and logical axes. Every process of the new component runs the old one
    on weights whose `w` is `w + lora_a @ lora_b * alpha / rank`: as `lora_b` starts at
    zero, the new model equals the old one exactly until it is trained. Its ports, fixed
    processes, bound dims, limits, state and axis names are the old component's, and its
    contracts are checked on construction.

    Args:
        component: the model to adapt.
        patterns: weight-path patterns (see `jm.path_matches`); the groups of the `w`s they
            select are adapted, e.g. `"encoder"` adapts every `Linear` of the encoder and
            `"*.mha.kqv"` the attention's fused input projections. Weights other than a
            `w` (biases, norms) that a pattern selects are left alone.
        rank: the adapters' rank, in [1, min(n_in, n_out)] of every target.
        alpha: scales the adapter's product by `alpha / rank`; by default `rank` (a scale
            of 1).

    Returns:
        The adapted component: `component.path` wrapped as `lora(...)`.

    Raises:
        WeightsError: a pattern selects no weight (listing the nearest paths), selects no
            `w`, or selects a `w` that is not a matrix or that already has an adapter.
        ConfigError: `rank` or `alpha` is out of range.
        ShapeError: a contract of the new component does not hold.

    Example:
        >>> from jaxmake.components import Mlp
        >>> adapted = lora(Mlp.make(Mlp(6, (8,), 4)), "layer_0", rank=2)
        >>> jax.tree.map(jnp.shape, jm.abstract_weights(adapted.weight_params))["layer_0"]
        {'b': (8,), 'lora_a': (6, 2), 'lora_b': (2, 8), 'w': (6, 8)}
    """
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise jm.ConfigError(f"`lora(rank=...)`={jm.value_repr(rank)} must be an int >= 1")
    if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, int | float) or not alpha > 0):
        raise jm.ConfigError(f"`lora(alpha=...)`={jm.value_repr(alpha)} must be a number > 0")
    scale = (rank if alpha is None else alpha) / rank
    targets = _targets(component.weight_params, (patterns,) if isinstance(patterns, str) else tuple(patterns))
    spec: Mapping[str, Any] = component.weight_params
    for path in targets:
        group = _get(spec, path)
        spec = _set(spec, path, {**group, **_adapter_params(path, group, rank)})

    def adapted(process: jm.Process) -> jm.Process:
        def run(weights: jm.Weights, inputs: Mapping[str, Array], rng: Array | None) -> Mapping[str, Array]:
            return process(_merged(weights, targets, scale), inputs, rng)

        return run

    return jm.Component(
        spec,
        {ports: adapted(process) for ports, process in component.processes.items()},
        fixed=component.fixed,
        dims=dict(component.dims),
        limits=component.limits,
        path=f"lora({component.path})",
        state_params=component.state_params,
        axis_names=component.axis_names,
    )


@jm.checks_own_arguments
def lora_weights(rng: Array, adapted: jm.Component, base_weights: jm.Weights) -> jm.Weights:
    """The adapted component's weights: the base weights as they are, plus freshly drawn adapters.

    Only the adapters are drawn, each exactly as `jm.make_weights(rng, adapted.weight_params)`
    would draw it (an array's key depends on its path only); nothing of the base is drawn.

    Args:
        rng: the key the adapters are drawn from.
        adapted: a component made by `lora`.
        base_weights: the weights of the component it adapts (e.g. a trained model's).

    Returns:
        The weights tree of `adapted.weight_params`: `base_weights`' arrays (not copied)
        with `lora_a` and `lora_b` beside each targeted `w`.

    Raises:
        WeightsError: `base_weights` does not match the base part of the spec (every
            missing, extra and mis-shaped path listed).

    Example:
        >>> from jaxmake.components import Linear
        >>> base = Linear.make(Linear(4, 3))
        >>> weights = jm.make_weights(jax.random.key(0), base.weight_params)
        >>> adapted = lora_weights(jax.random.key(1), lora(base, "*", rank=2), weights)
        >>> sorted(adapted), adapted["w"] is weights["w"], adapted["lora_b"].tolist()
        (['b', 'lora_a', 'lora_b', 'w'], True, [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    """
    base_spec, adapters = _split(adapted.weight_params)
    jm.check_weights(base_spec, base_weights)
    return _deep_merge(base_weights, jm.make_weights(rng, adapters))


@jm.checks_own_arguments
def merge_lora(weights: jm.Weights, *, alpha: float | None = None) -> jm.Weights:
    """Fold the adapters into their `w`s: the weights of the base component, for export or serving.

    Each group holding `lora_a` and `lora_b` gets `w + lora_a @ lora_b * alpha / rank`
    (`rank` read from `lora_a`'s last dim) and loses the adapters; the base component then
    computes what the adapted one did, up to float rounding.

    Args:
        weights: the adapted component's weights (e.g. after fine-tuning).
        alpha: the `alpha` given to `lora` (by default `rank`, as there).

    Returns:
        A new weights tree shaped as the base component's spec.

    Example:
        >>> merged = merge_lora({"w": jnp.zeros((2, 2)), "lora_a": jnp.ones((2, 1)), "lora_b": jnp.ones((1, 2))})
        >>> merged["w"].tolist(), sorted(merged)
        ([[1.0, 1.0], [1.0, 1.0]], ['w'])
    """
    if "w" in weights and LORA_A in weights and LORA_B in weights:
        rank = weights[LORA_A].shape[-1]
        return _folded(weights, (rank if alpha is None else alpha) / rank)
    return {
        name: merge_lora(dict(node), alpha=alpha) if isinstance(node, Mapping) else node
        for name, node in weights.items()
    }


def _targets(spec: jm.WeightParamsTree, patterns: tuple[str, ...]) -> list[str]:
    """The paths of the groups to adapt: those of the `w`s the patterns select, in the spec's order."""
    if not patterns:
        raise jm.WeightsError(f"`lora` needs at least one weight-path pattern. {_NOT_LINEAR}")
    selected: dict[str, None] = {}
    for pattern in patterns:
        paths = [path for path in jm.match_paths(spec, pattern) if path.rsplit(".", 1)[-1] == "w"]
        if not paths:
            shown = ", ".join(f"`{p}`" for p in jm.match_paths(spec, pattern)[:5])
            raise jm.WeightsError(f"the pattern `{pattern}` selects no `w` (it selects {shown}). {_NOT_LINEAR}")
        selected |= dict.fromkeys(paths)
    for path in selected:
        w, group = jm.get_at(spec, path), _parent(path)
        if len(w.shape) - w.stack != 2:
            raise jm.WeightsError(
                f"`{path}` is {_shape_str(w)}, not a matrix `[n_in, n_out]` (stacked: `[n_layers, n_in, n_out]`). "
                f"{_NOT_LINEAR}"
            )
        held = sorted({LORA_A, LORA_B} & set(_get(spec, group)))
        if held:
            raise jm.WeightsError(
                f"`{group or 'the root'}` already holds {held}: it is adapted already; fold the adapters in with "
                f"`merge_lora` first, or adapt other layers"
            )
    return [_parent(path) for path in selected]


def _parent(path: str) -> str:
    """The path of the group holding the weight at `path` (`""`: the root)."""
    return path.rsplit(".", 1)[0] if "." in path else ""


def _get(tree: Mapping[str, Any], path: str) -> Any:
    return jm.get_at(tree, path) if path else tree


def _set(tree: Mapping[str, Any], path: str, value: Any) -> Any:
    return jm.set_at(tree, path, value) if path else value


def _adapter_params(path: str, group: jm.WeightParamsTree, rank: int) -> dict[str, jm.WeightParams]:
    w = group["w"]
    assert isinstance(w, jm.WeightParams)  # `_targets` checked it
    *lead, n_in, n_out = w.shape
    if rank > min(n_in, n_out):
        raise jm.ConfigError(
            f"`lora(rank=...)`={rank} must be <= min(n_in, n_out) = {min(n_in, n_out)} of `{path}.w` "
            f"({_shape_str(w)}): a larger rank adds weights, not expressiveness"
        )
    axes = w.axes or (None,) * len(w.shape)
    lead_axes, (in_axis, out_axis) = axes[:-2], axes[-2:]
    return {
        LORA_A: jm.WeightParams(
            (*lead, n_in, rank),
            init="kaiming",
            scale=math.sqrt(0.5),  # kaiming's std is sqrt(2 / n_in)
            dtype=w.dtype,
            axes=None if w.axes is None else (*lead_axes, in_axis, None),
            stack=w.stack,
        ),
        LORA_B: jm.WeightParams(
            (*lead, rank, n_out),
            init="zeros",
            dtype=w.dtype,
            axes=None if w.axes is None else (*lead_axes, None, out_axis),
            stack=w.stack,
        ),
    }


def _merged(weights: jm.Weights, targets: list[str], scale: float) -> jm.Weights:
    """The base component's weights: each target's `w` replaced by `w + lora_a @ lora_b * scale`."""
    for path in targets:
        weights = _set(weights, path, _folded(_get(weights, path), scale))
    return weights


def _folded(group: Mapping[str, Any], scale: float) -> dict[str, Any]:
    """The group with `w + lora_a @ lora_b * scale` as its `w`, and without its adapters."""
    w, a, b = group["w"], group[LORA_A], group[LORA_B]
    delta = jnp.matmul(a, b)
    w = w + (delta * jnp.asarray(scale, delta.dtype)).astype(w.dtype)
    return {key: w if key == "w" else value for key, value in group.items() if key not in (LORA_A, LORA_B)}


def _split(spec: jm.WeightParamsTree) -> tuple[dict[str, Any], dict[str, Any]]:
    """`(base, adapters)`: the spec without the adapters, and the adapters alone (on their full paths)."""
    if "w" in spec and LORA_A in spec and LORA_B in spec:
        return {k: v for k, v in spec.items() if k not in (LORA_A, LORA_B)}, {
            LORA_A: spec[LORA_A],
            LORA_B: spec[LORA_B],
        }
    base: dict[str, Any] = {}
    adapters: dict[str, Any] = {}
    for name, node in spec.items():
        if isinstance(node, jm.WeightParams):
            base[name] = node
            continue
        base[name], sub_adapters = _split(node)
        if sub_adapters:
            adapters[name] = sub_adapters
    return base, adapters


def _deep_merge(tree: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(tree)
    for name, node in extra.items():
        merged[name] = _deep_merge(tree[name], node) if isinstance(node, Mapping) and name in tree else node
    return merged


def _shape_str(w: jm.WeightParams) -> str:
    shape = "[" + ", ".join(map(str, w.shape)) + "]"
    return f"{jnp.dtype(w.dtype).name}{shape} with {w.stack} stacked dim{'' if w.stack == 1 else 's'}"
