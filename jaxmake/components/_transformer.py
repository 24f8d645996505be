"""Transformers: the pre-norm `TransformerLayer` and the `TransformerEncoder` that stacks it."""

from collections.abc import Callable, Mapping
from dataclasses import KW_ONLY
from typing import Any, Literal, Protocol, TypeAlias, runtime_checkable

import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float

import jaxmake as jm
from jaxmake.components._attention import (
    AttentionImpl,
    SelfMultiHeadAttn,
    attention_ports,
    cache_ports,
    check_heads,
)
from jaxmake.components._dropout import Dropout
from jaxmake.components._fields import Activation, Eps, KeepRate, Size
from jaxmake.components._linear import InnerMlpConfigs, Mlp
from jaxmake.components._norm import LayerNorm
from jaxmake.components._precision import Policy, PrecisionFields

Remat: TypeAlias = Literal["none", "layer", "dots", "dots_no_batch"]
"""What the backward pass of each layer of an encoder recomputes (see `TransformerEncoderFields`)."""

_REMAT_POLICIES: dict[str, Callable[..., bool] | None] = {
    "layer": None,
    "dots": jax.checkpoint_policies.dots_saveable,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
"""The `jax.checkpoint` policy of each `Remat` but `"none"` (`None`: save nothing inside a layer)."""


@runtime_checkable
class TransformerLayerConfigs(InnerMlpConfigs, Protocol):
    @property
    def n_heads(self) -> int: ...
    @property
    def dim_model(self) -> int: ...
    @property
    def eps(self) -> float: ...
    @property
    def causal(self) -> bool: ...
    @property
    def attention_impl(self) -> AttentionImpl: ...


@runtime_checkable
class TransformerEncoderConfigs(TransformerLayerConfigs, Protocol):
    @property
    def n_tfe_layers(self) -> int: ...
    @property
    def universal(self) -> bool: ...
    @property
    def scan_layers(self) -> bool: ...
    @property
    def scan_unroll(self) -> int: ...
    @property
    def remat(self) -> Remat: ...


class TransformerFields(PrecisionFields):
    """The fields of every transformer config, declared once (`TransformerLayerConfigs`).

    `TransformerLayer` is these fields, `causal` and a `make`; `TransformerEncoderFields`
    adds the depth. Subclass them for a model config that feeds a transformer's `make`
    (and give it a `causal`, as a field or a property). The fields after `mlp_n_hidden` are
    keyword-only.

    Args:
        n_heads: attention heads; must divide `dim_model`.
        dim_model: the width of the tokens.
        mlp_n_hidden: the hidden widths of each layer's `Mlp`, e.g. `(4 * dim_model,)`.
        dropout_keep_rate: dropout on both residual branches and inside the `Mlp`, in (0, 1].
        eps: the `LayerNorm` epsilon, in [1e-12, 1].
        mlp_activation: the `Mlp`'s activation.
        attention_impl: how attention is computed: `"auto"`, `"einsum"` or `"fused"` (see
            `SelfMultiHeadAttn`).
        dtype, param_dtype, matmul_precision: the precision policy of every part (see
            `PrecisionFields`).

    Raises:
        ConfigError: a field is out of range, or `n_heads` does not divide `dim_model`.
    """

    n_heads: Size
    dim_model: Size
    mlp_n_hidden: tuple[Size, ...]
    _: KW_ONLY
    dropout_keep_rate: KeepRate = 1.0
    eps: Eps = 1e-5
    mlp_activation: Activation = "relu"
    attention_impl: AttentionImpl = "auto"

    def validate(self) -> None:
        check_heads(self)


class TransformerEncoderFields(TransformerFields):
    """`TransformerFields` and the depth of an encoder (`TransformerEncoderConfigs`).

    Args:
        n_tfe_layers: the depth, >= 1.
        universal: share one layer's weights across depth (keyword-only).
        scan_layers: run the layers with `jax.lax.scan` (keyword-only).
        scan_unroll: with `scan_layers`, how many layers each iteration of the scan runs
            (`jax.lax.scan`'s `unroll`; capped at `n_tfe_layers`): more is a longer
            compile and, on a GPU, a faster step (keyword-only).
        remat: what the backward pass recomputes instead of keeping (`jax.checkpoint`
            around each layer; keyword-only):

            * `"none"`: nothing; every activation is kept;
            * `"layer"`: everything inside a layer; only the layers' inputs are kept
              (the least memory, about one more forward pass of compute);
            * `"dots"`: keep the matmul outputs, recompute the rest
              (`jax.checkpoint_policies.dots_saveable`);
            * `"dots_no_batch"`: keep the matmul outputs without batch dims (the
              projections, not the attention scores;
              `jax.checkpoint_policies.dots_with_no_batch_dims_saveable`).
    """

    n_tfe_layers: Size
    _: KW_ONLY
    universal: bool = False
    scan_layers: bool = False
    scan_unroll: Size = 1
    remat: Remat = "none"


def _ports(policy: Policy, attn_dims: str, cache_dims: str, causal: bool) -> list[jm.ProcessPorts]:
    """A transformer's processes' ports: the pipeline, `MASK_PORTS`, `MASKED_PORTS` with
    `attn` of the dims `attn_dims`, and if `causal` `CACHE_PORTS` with caches of the dims
    `cache_dims`; the `Output` in the compute dtype."""
    x = Float[Array, "T dim_model"]
    ports = [
        policy.pipeline_ports(x, "T dim_model"),
        attention_ports(policy, "T dim_model", attn_dims=None),
        attention_ports(policy, "T dim_model", attn_dims=attn_dims),
    ]
    return [*ports, cache_ports(policy, "T dim_model", cache_dims)] if causal else ports


class TransformerLayer(TransformerFields):
    """A pre-norm transformer layer (Xiong et al., 2020).

    Per example; batch with `jax.vmap`.
    `x = x + dropout(mha(norm1(x)))`, then `x = x + dropout(mlp(norm2(x)))`.
    Weights: `norm1`, `norm2` (`LayerNorm`), `mha` (`SelfMultiHeadAttn`, `dim_input =
    dim_model`), `dropout` (none: `{}`), `mlp` (`Mlp(dim_model, mlp_n_hidden, dim_model)`).

    Processes, fixed when `dropout_keep_rate` is 1 (with `rng=None` they run in evaluation
    mode, without dropout), their `Output` in `dtype`:

    * the pipeline: `[T, dim_model] -> [T, dim_model]`;
    * `MASK_PORTS`, `(Input, "mask") -> (Output)`: `mask: [T, T]` as for `SelfMultiHeadAttn`;
    * `MASKED_PORTS`, `(Input, "mask") -> (Output, "attn")`: the same, and `attn:
      [n_heads, T, T]`, the attention weights (float32);
    * with `causal` only, `CACHE_PORTS`, `(Input, "k_cache", "v_cache", "position") ->
      (Output, "k_cache", "v_cache")`: incremental decoding with the attention's caches
      `[S, dim_model]` (see `SelfMultiHeadAttn`).

    Args:
        n_heads, dim_model, mlp_n_hidden, dropout_keep_rate, eps, mlp_activation,
            attention_impl, dtype, param_dtype, matmul_precision: see `TransformerFields`.
        causal: each position attends only to itself and those before it (keyword-only).

    Raises:
        ConfigError: a field is out of range, or `n_heads` does not divide `dim_model`.

    Example:
        >>> layer = TransformerLayer.make(TransformerLayer(n_heads=2, dim_model=4, mlp_n_hidden=(8,)))
        >>> weights = jm.abstract_weights(layer.weight_params)  # or jm.make_weights(key, ...)
        >>> jax.tree.map(jnp.shape, weights)
        {'dropout': {},
         'mha': {'kqv': {'b': (12,), 'w': (4, 12)}, 'out': {'b': (4,), 'w': (4, 4)}},
         'mlp': {'layer_0': {'b': (8,), 'w': (4, 8)}, 'layer_1': {'b': (4,), 'w': (8, 4)}},
         'norm1': {'a': (4,), 'b': (4,)}, 'norm2': {'a': (4,), 'b': (4,)}}
    """

    _: KW_ONLY
    causal: bool = False

    @classmethod
    def make(cls, config: TransformerLayerConfigs) -> jm.Component:
        dim, policy = config.dim_model, Policy(config)
        mha = SelfMultiHeadAttn(
            config.n_heads, dim, dim, causal=config.causal, attention_impl=config.attention_impl, **policy.fields
        )
        mlp = Mlp(dim, config.mlp_n_hidden, dim, config.mlp_activation, config.dropout_keep_rate, **policy.fields)
        c = jm.make_children(
            norm1=lambda: LayerNorm.make(config),
            mha=mha,
            dropout=lambda: Dropout.make(config),
            norm2=lambda: LayerNorm.make(config),
            mlp=mlp,
        )
        ports_list = _ports(policy, "n_heads T T", "S dim_model", config.causal)
        processes = {ports: _layer_process(c, ports, policy) for ports in ports_list}
        return jm.Component(c.weight_params, processes, fixed=config.dropout_keep_rate == 1.0, dims=config)


def _layer_process(c: jm.Children, ports: jm.ProcessPorts, policy: Policy) -> jm.Process:
    """One pre-norm layer whose attention is the `mha` process with the same ports.

    The inputs other than `Input` (the mask, the caches) go to the attention, and its
    outputs other than `Output` (the attention weights, the caches) are the layer's. The
    residual stream is in the compute dtype.
    """

    def process(weights: jm.Weights, inputs: Mapping[str, Array], rng: Array | None) -> dict[str, Array]:
        x = policy.cast(inputs[jm.Input])
        attended = c.mha.run(weights, {**inputs, jm.Input: c.norm1(weights, x)}, outputs=ports.outputs)
        x = x + c.dropout(weights, attended[jm.Output], _fold(rng, 0))
        x = x + c.dropout(weights, c.mlp(weights, c.norm2(weights, x), _fold(rng, 1)), _fold(rng, 2))
        return {**attended, jm.Output: x}

    return process


_SHARED = "tfe_layer"
"""The key of the one layer of a universal encoder."""
_STACKED = "tfe_layers"
"""The key of the stacked layers of a scanned encoder."""


def _loop_key(i: int) -> str:
    return f"tfe_layer_{i}"


class TransformerEncoder(TransformerEncoderFields):
    """`n_tfe_layers` pre-norm `TransformerLayer`s, then a final `LayerNorm`.

    Per example; batch with `jax.vmap`. Layer `i` gets the rng `jax.random.fold_in(rng, i)`
    in every layout, so that the layouts agree given the same weights.

    Weights, `norm` (the final `LayerNorm`) and:

    * by default, `tfe_layer_0 .. tfe_layer_{n-1}`, run one after another;
    * `universal=True`: one `tfe_layer`, applied `n_tfe_layers` times (Dehghani et al., 2019);
    * `scan_layers=True`: `tfe_layers`, every layer's weights stacked on a leading axis of
      size `n_tfe_layers` (`jm.stack_params`), run with `jax.lax.scan`: compile time does not
      grow with depth. With `universal=True` too, the shared `tfe_layer` is scanned.
      `stack_layers` and `unstack_layers` convert weights between the default layout and this.

    Processes, fixed when `dropout_keep_rate` is 1 (with `rng=None` they run in evaluation
    mode, without dropout), their `Output` in `dtype`:

    * the pipeline: `[T, dim_model] -> [T, dim_model]`;
    * `MASK_PORTS`, `(Input, "mask") -> (Output)`: `mask: [T, T]` as for `SelfMultiHeadAttn`;
    * `MASKED_PORTS`, `(Input, "mask") -> (Output, "attn")`: the same, and `attn:
      [n_tfe_layers, n_heads, T, T]`, every layer's weights (float32);
    * with `causal` only, `CACHE_PORTS`, `(Input, "k_cache", "v_cache", "position") ->
      (Output, "k_cache", "v_cache")`: incremental decoding; the caches `[n_tfe_layers, S,
      dim_model]` hold each layer's (see `SelfMultiHeadAttn`), in every layout (a universal encoder's one
      layer still has a cache per application).

    Args:
        n_heads, dim_model, mlp_n_hidden, dropout_keep_rate, eps, mlp_activation,
            attention_impl, dtype, param_dtype, matmul_precision: see `TransformerFields`.
        n_tfe_layers, universal, scan_layers, scan_unroll, remat: see `TransformerEncoderFields`.
        causal: each position attends only to itself and those before it (keyword-only).

    Raises:
        ConfigError: a field is out of range, or `n_heads` does not divide `dim_model`.

    Example:
        >>> encoder = TransformerEncoder.make(TransformerEncoder(2, dim_model=4, mlp_n_hidden=(8,), n_tfe_layers=3))
        >>> weights = jm.abstract_weights(encoder.weight_params)  # or jm.make_weights(key, ...)
        >>> sorted(weights)
        ['norm', 'tfe_layer_0', 'tfe_layer_1', 'tfe_layer_2']
        >>> scanned = TransformerEncoder.make(TransformerEncoder(2, 4, (8,), 3, scan_layers=True))
        >>> jax.tree.map(jnp.shape, jm.abstract_weights(scanned.weight_params))
        {'norm': {'a': (4,), 'b': (4,)},
         'tfe_layers': {'dropout': {},
                        'mha': {'kqv': {'b': (3, 12), 'w': (3, 4, 12)}, 'out': {'b': (3, 4), 'w': (3, 4, 4)}},
                        'mlp': {'layer_0': {'b': (3, 8), 'w': (3, 4, 8)}, 'layer_1': {'b': (3, 4), 'w': (3, 8, 4)}},
                        'norm1': {'a': (3, 4), 'b': (3, 4)}, 'norm2': {'a': (3, 4), 'b': (3, 4)}}}
        >>> stacked = jax.eval_shape(lambda w: stack_layers(w, 3), weights)
        >>> jax.tree.map(jnp.shape, stacked) == jax.tree.map(jnp.shape, jm.abstract_weights(scanned.weight_params))
        True
    """

    _: KW_ONLY
    causal: bool = False

    @classmethod
    def make(cls, config: TransformerEncoderConfigs) -> jm.Component:
        n, universal = config.n_tfe_layers, config.universal
        stacked = config.scan_layers and not universal
        layer_keys = [_SHARED] if universal else [_STACKED] if stacked else [_loop_key(i) for i in range(n)]
        # One layer is made (and checked), under the first key; the others share its processes.
        c = jm.make_children(
            **{layer_keys[0]: lambda: TransformerLayer.make(config)}, norm=lambda: LayerNorm.make(config)
        )
        layer = c[layer_keys[0]].component
        layer_params = jm.stack_params(layer.weight_params, n) if stacked else layer.weight_params
        policy, remat, scanned = Policy(config), config.remat, config.scan_layers

        def run(process: jm.Process) -> jm.Process:
            process = _rematerialised(process, remat, scanned)
            if scanned:
                return _scan(process, n, universal, min(config.scan_unroll, n), policy.cast)
            return _loop(process, n, universal)

        ports_list = _ports(policy, "n_tfe_layers n_heads T T", "n_tfe_layers S dim_model", config.causal)
        processes = {ports: _then_norm(run(layer.get_process(ports)), c.norm) for ports in ports_list}
        spec = {**dict.fromkeys(layer_keys, layer_params), "norm": c.norm.component.weight_params}
        return jm.Component(spec, processes, fixed=config.dropout_keep_rate == 1.0, dims=config)


def _fold(rng: Array | None, i: int | Array) -> Array | None:
    """The rng of step `i`: `fold_in(rng, i)`, or `None` (evaluation) when `rng` is `None`."""
    return None if rng is None else jr.fold_in(rng, i)


_PER_LAYER = ("k_cache", "v_cache")
"""The inputs that hold one slice per layer on their leading axis (the caches); the other
inputs (the mask, the position) go to every layer whole."""


def _per_layer(inputs: Mapping[str, Array]) -> dict[str, Array]:
    """The inputs with a slice per layer."""
    return {name: inputs[name] for name in _PER_LAYER if name in inputs}


def _side_outputs(outputs: Mapping[str, Array]) -> dict[str, Array]:
    """A layer's outputs other than `Output` (its attention weights)."""
    return {name: value for name, value in outputs.items() if name != jm.Output}


def _loop(layer: jm.Process, n: int, universal: bool) -> jm.Process:
    """`n` layers one after another in Python (XLA compiles `n` copies); side outputs stacked."""

    def run(weights: jm.Weights, inputs: Mapping[str, Array], rng: Array | None) -> dict[str, Array]:
        x, sides = inputs[jm.Input], []
        for i in range(n):
            layer_inputs = {**inputs, **{name: value[i] for name, value in _per_layer(inputs).items()}, jm.Input: x}
            outputs = layer(weights[_SHARED if universal else _loop_key(i)], layer_inputs, _fold(rng, i))
            x = outputs[jm.Output]
            sides.append(_side_outputs(outputs))
        stacked: dict[str, Array] = jax.tree.map(lambda *layers: jnp.stack(layers), *sides)
        return {**stacked, jm.Output: x}

    return run


def _rematerialised(layer: jm.Process, remat: Remat, scanned: bool) -> jm.Process:
    """`layer` under `jax.checkpoint` with the policy of `remat` (or as it is, for `"none"`).

    Inside a scan, CSE cannot merge the recomputation into the forward pass, so it need
    not be prevented (`prevent_cse=False`, as `jax.checkpoint` advises). The checkpointed
    function is a fresh closure at each trace: `jax.checkpoint` caches what it traced by
    function, and what a layer traces to differs while a contract is checked at make time
    (its verified children stand in, returning zeros).
    """
    if remat == "none":
        return layer
    policy = _REMAT_POLICIES[remat]

    def process(weights: jm.Weights, inputs: Mapping[str, Array], rng: Array | None) -> dict[str, Array]:
        def fresh(w: jm.Weights, i: Mapping[str, Array], r: Array | None) -> dict[str, Array]:
            return dict(layer(w, i, r))

        outputs: dict[str, Array] = jax.checkpoint(fresh, prevent_cse=not scanned, policy=policy)(weights, inputs, rng)
        return outputs

    return process


def _scan(layer: jm.Process, n: int, universal: bool, unroll: int, cast: Callable[[Array], Array]) -> jm.Process:
    """`n` layers run by `jax.lax.scan`, `unroll` per iteration (XLA compiles `unroll`); side outputs stacked.

    The input is `cast` to the layers' compute dtype first: the scan's carry keeps one dtype.
    """

    def run(weights: jm.Weights, inputs: Mapping[str, Array], rng: Array | None) -> dict[str, Array]:
        def step(x: Array, per_layer: tuple[Any, Array, dict[str, Array]]) -> tuple[Array, dict[str, Array]]:
            stacked_weights, i, sliced = per_layer
            layer_weights = weights[_SHARED] if universal else stacked_weights
            outputs = layer(layer_weights, {**inputs, **sliced, jm.Input: x}, _fold(rng, i))
            return outputs[jm.Output], _side_outputs(outputs)

        per_layer = (None if universal else weights[_STACKED], jnp.arange(n), _per_layer(inputs))
        x, stacked = jax.lax.scan(step, cast(inputs[jm.Input]), per_layer, unroll=unroll)
        return {**stacked, jm.Output: x}

    return run


def _then_norm(layers: jm.Process, norm: jm.Child) -> jm.Process:
    """`layers`, with the final norm applied to its `Output`."""

    def process(weights: jm.Weights, inputs: Mapping[str, Array], rng: Array | None) -> dict[str, Array]:
        outputs = layers(weights, inputs, rng)
        return {**outputs, jm.Output: norm(weights, outputs[jm.Output])}

    return process


def stack_layers(weights: jm.Weights, n_tfe_layers: int) -> jm.Weights:
    """The weights of a `TransformerEncoder` in the default layout, converted to the scanned one.

    Args:
        weights: holds `tfe_layer_0 .. tfe_layer_{n-1}` (and `norm`, kept as it is).
        n_tfe_layers: `n`, the number of layers.

    Returns:
        The same weights with the layers' replaced by `tfe_layers`, each array stacked on a
        new leading axis of size `n` (as `scan_layers=True` expects).

    Raises:
        WeightsError: the layer keys are not exactly `tfe_layer_0 .. tfe_layer_{n-1}`.
    """
    keys = [_loop_key(i) for i in range(n_tfe_layers)]
    held = sorted(k for k in weights if k.startswith(_SHARED))
    if held != sorted(keys):
        raise jm.WeightsError(
            f"`stack_layers` takes weights holding `tfe_layer_0` .. `tfe_layer_{n_tfe_layers - 1}` "
            f"(n_tfe_layers={n_tfe_layers}); these hold {held}"
        )
    stacked = jax.tree.map(lambda *layers: jnp.stack(layers), *(weights[k] for k in keys))
    return {_STACKED: stacked, **{k: v for k, v in weights.items() if k not in keys}}


def unstack_layers(weights: jm.Weights) -> jm.Weights:
    """The inverse of `stack_layers`: `tfe_layers` split into `tfe_layer_0 .. tfe_layer_{n-1}`.

    Raises:
        WeightsError: the weights hold no `tfe_layers`.
    """
    if _STACKED not in weights:
        raise jm.WeightsError(f"`unstack_layers` takes weights holding `tfe_layers`; these hold {sorted(weights)}")
    stacked = weights[_STACKED]
    n = len(jax.tree.leaves(stacked)[0])
    layers = {_loop_key(i): jax.tree.map(lambda a, i=i: a[i], stacked) for i in range(n)}
    return {**layers, **{k: v for k, v in weights.items() if k != _STACKED}}
