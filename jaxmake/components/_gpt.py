"""`Gpt`: a decoder-only language model, and `generate` to sample from it."""

import functools
from collections.abc import Mapping
from dataclasses import KW_ONLY
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float32, Int

import jaxmake as jm
from jaxmake.components._attention import CACHE_PORTS
from jaxmake.components._embedding import Embeddings
from jaxmake.components._fields import Activation, InitScale, Size
from jaxmake.components._functional import softmax_cross_entropy
from jaxmake.components._linear import Linear
from jaxmake.components._positional import PositionalEncoding
from jaxmake.components._precision import Policy
from jaxmake.components._transformer import TransformerEncoder, TransformerEncoderConfigs, TransformerEncoderFields

LOSS_PORTS = jm.make_ports({jm.Input: Int[Array, "T"], "targets": Int[Array, "T"]}, {"loss": Float32[Array, ""]})
"""The ports of `Gpt`'s training process: tokens and next tokens -> mean cross-entropy (float32)."""

_PIPELINE_PORTS = jm.make_ports({jm.Input: Int[Array, "T"]}, {jm.Output: Float32[Array, "T vocab_size"]})


@runtime_checkable
class GptConfigs(TransformerEncoderConfigs, Protocol):
    @property
    def vocab_size(self) -> int: ...
    @property
    def vocab_multiple(self) -> int: ...
    @property
    def n_ctx(self) -> int: ...
    @property
    def dict_init_scale(self) -> float: ...
    @property
    def pos_init_scale(self) -> float: ...


class Gpt(TransformerEncoderFields):
    """A decoder-only transformer language model (Radford et al., 2018).

    Per example; batch with `jax.vmap`. Token embedding, learned positions added
    (`PositionalEncoding`, dynamic length), a causal pre-norm `TransformerEncoder` (whose
    last step is the final LayerNorm; its attention causal through `is_causal` when fused,
    with no `[T, T]` mask), and an untied linear head. Processes (random iff
    `dropout_keep_rate < 1`; `rng=None` evaluates without dropout):

    * the pipeline: tokens `Int[T] -> logits [T, vocab_size]` (float32: the head's
      product is accumulated in float32 whatever `dtype`), for any `T <= n_ctx`;
    * `LOSS_PORTS`, `(Input, "targets") -> ("loss",)`: the mean next-token cross-entropy
      of `targets [T]` (the tokens shifted by one) under the logits, in float32;
    * `CACHE_PORTS`, `(Input, "k_cache", "v_cache", "position") -> (Output, "k_cache",
      "v_cache")`, always fixed (no dropout): the logits `[T, vocab_size]` of `T` new tokens
      at positions `position .. position + T - 1` given the key/value caches of the tokens
      before them, and the caches with the new tokens' added. The caches are `[n_tfe_layers,
      n_ctx, dim_model]` (`empty_cache` makes them); the caller keeps `position + T <= n_ctx`.
      A prompt run at `position` 0 then each sampled token at the next position gives
      the pipeline's logits at a fraction of its cost: `generate` does this.

    Weights: `embedding` (`dict: [V, dim_model]`), `positional_encoding`, `encoder`,
    `lm_head` (`w: [dim_model, V]` with the logical axes `("embed", "vocab")`, `b: [V]`),
    where `V` is `vocab_size` rounded up to a multiple of `vocab_multiple`. The head starts
    small (`init_scale=0.1`) so that the initial loss is close to `ln(vocab_size)`.

    Padding the vocabulary (as GPT-2's 50,257 tokens are padded to 50,304) lets tensor
    parallelism split the tables over a `model` axis whatever the corpus's token count. The
    padded rows are never read for a real token, and the pipeline returns the logits of
    the `vocab_size` real tokens only, so the loss and sampling are exactly those of the
    unpadded model; padded rows get zero gradients.

    Args:
        vocab_size: the number of tokens.
        vocab_multiple: pad the embedding and head to a multiple of this many tokens
            (e.g. 64; 1 leaves them unpadded).
        n_ctx: the longest sequence (the context length).
        dict_init_scale: scales the token embeddings, in (0, 100].
        pos_init_scale: scales the position table, in (0, 100].
        n_heads, dim_model, mlp_n_hidden, dropout_keep_rate, eps, mlp_activation, n_tfe_layers,
            universal, scan_layers, scan_unroll, remat, attention_impl, dtype, param_dtype,
            matmul_precision: see `TransformerEncoderFields` (here with defaults).

    Every field is keyword-only. `causal` is not a field: a `Gpt` is causal.

    Example:
        >>> gpt = Gpt.make(Gpt(vocab_size=11, n_ctx=8, n_tfe_layers=1, dim_model=8, n_heads=2, mlp_n_hidden=(16,)))
        >>> shapes = jax.tree.map(jnp.shape, jm.abstract_weights(gpt.weight_params))
        >>> shapes["embedding"], shapes["positional_encoding"], shapes["lm_head"]
        ({'dict': (11, 8)}, {'encoding_dim_0': (8, 8)}, {'b': (11,), 'w': (8, 11)})
    """

    _: KW_ONLY
    vocab_size: Size = 256
    vocab_multiple: Size = 1
    n_ctx: Size = 64
    n_tfe_layers: Size = 2
    n_heads: Size = 4
    dim_model: Size = 64
    mlp_n_hidden: tuple[Size, ...] = (256,)
    mlp_activation: Activation = "gelu"
    dict_init_scale: InitScale = 1.0
    pos_init_scale: InitScale = 0.02

    @property
    def causal(self) -> bool:
        """Always true: each token is predicted from those before it."""
        return True

    @classmethod
    def make(cls, config: GptConfigs) -> jm.Component:
        dim, vocab, policy = config.dim_model, config.vocab_size, Policy(config)
        padded = -(-vocab // config.vocab_multiple) * config.vocab_multiple
        c = jm.make_children(
            embedding=Embeddings(padded, dim, config.dict_init_scale, **policy.fields),
            positional_encoding=PositionalEncoding(
                config.n_ctx, dim, "sum", config.pos_init_scale, dynamic_length=True, **policy.fields
            ),
            encoder=lambda: TransformerEncoder.make(config),
            lm_head=Linear(dim, padded, init_scale=0.1, axes=("embed", "vocab"), **policy.fields),
        )

        def head(weights: jm.Weights, x: Array) -> Array:
            lm_head = c.lm_head.weights(weights)  # the head's product accumulated in float32, not rounded to `dtype`
            y = policy.einsum("td,dv->tv", x, lm_head["w"], float32_result=True) + lm_head["b"].astype(jnp.float32)
            sliced: Array = y[:, :vocab]
            return sliced

        def logits(weights: jm.Weights, tokens: Array, rng: Array | None) -> Array:
            x = c.encoder(weights, c.positional_encoding(weights, c.embedding(weights, tokens)), rng)
            return head(weights, x)

        def pipeline(weights: jm.Weights, inputs: Mapping[str, Array], rng: Array | None) -> dict[str, Array]:
            return {jm.Output: logits(weights, inputs[jm.Input], rng)}

        def loss(weights: jm.Weights, inputs: Mapping[str, Array], rng: Array | None) -> dict[str, Array]:
            losses = softmax_cross_entropy(logits(weights, inputs[jm.Input], rng), inputs["targets"])
            return {"loss": losses.mean()}

        def cached(weights: jm.Weights, inputs: Mapping[str, Array]) -> dict[str, Array]:
            x = c.embedding(weights, inputs[jm.Input])
            x = c.positional_encoding.run(weights, {jm.Input: x, "position": inputs["position"]})[jm.Output]
            encoded = c.encoder.run(weights, {**inputs, jm.Input: x})
            return {**encoded, jm.Output: head(weights, encoded[jm.Output])}

        cache = policy.floats[Array, "n_tfe_layers n_ctx dim_model"]
        cache_ports = jm.make_ports(
            {jm.Input: Int[Array, "T"], "k_cache": cache, "v_cache": cache, "position": Int[Array, ""]},
            {jm.Output: Float32[Array, "T vocab_size"], "k_cache": cache, "v_cache": cache},
        )
        processes: dict[jm.ProcessPorts, jm.Process | jm.FixedProcess] = {
            _PIPELINE_PORTS: pipeline,
            LOSS_PORTS: loss,
            cache_ports: cached,
        }
        fixed = True if config.dropout_keep_rate == 1.0 else [cache_ports]
        return jm.Component(c.weight_params, processes, fixed=fixed, dims=config, limits={"T": config.n_ctx})


def empty_cache(gpt: jm.Component) -> dict[str, Array]:
    """The key/value caches of a `Gpt`'s `CACHE_PORTS` process, all zeros (no token yet).

    Their shapes and dtype come from the process's contract: `k_cache` and `v_cache` are each
    `[n_tfe_layers, n_ctx, dim_model]` in the compute `dtype` (every layer's keys, the heads
    side by side), whatever the layout of the layers (`scan_layers`, `universal`).

    Example:
        >>> gpt = Gpt.make(Gpt(vocab_size=11, n_ctx=8, n_tfe_layers=3, dim_model=8, n_heads=2, mlp_n_hidden=(16,)))
        >>> jax.tree.map(jnp.shape, empty_cache(gpt))
        {'k_cache': (3, 8, 8), 'v_cache': (3, 8, 8)}
    """
    ports = next(p for p in gpt.processes if p == CACHE_PORTS)  # the stored ports carry the annotations
    abstract = jm.abstract_inputs(ports, gpt.dims, 0, gpt.limits)
    return {name: jnp.zeros(abstract[name].shape, abstract[name].dtype) for name in ("k_cache", "v_cache")}


def generate(
    gpt: jm.Component,
    weights: jm.Weights,
    prompt: Int[Array, " P"],
    n_tokens: int,
    rng: Array,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    slide: int = 1,
    cache: bool = True,
) -> Int[Array, " P+{n_tokens}"]:
    """Sample `n_tokens` tokens after `prompt` from a `Gpt` component, without dropout.

    Token `i` is drawn from `softmax(logits / temperature)` (restricted to the `top_k` most
    likely tokens when given) with the key `fold_in(rng, i)`, so a fixed `rng` gives a
    fixed sample, and `top_k=1` is greedy decoding.

    With `cache=True` (the default) the prompt is run once (its last `n_ctx` tokens), and
    then each new token alone, against the key/value caches of the tokens before it
    (`CACHE_PORTS`): the cost of a token no longer grows with the context. The whole loop is
    one `jax.lax.fori_loop`, compiled once per prompt length, `n_tokens`, `top_k` and `slide`.

    Beyond `n_ctx` tokens the context is a sliding window. Learned positions cannot be
    shifted inside a cache, so when the cache is full the window moves on by `slide`
    tokens and its remaining `n_ctx - slide + 1` tokens are run afresh (one prompt-sized
    call every `slide` tokens). With `slide=1` (the default) every token sees exactly the
    last `n_ctx` tokens, as the uncached path does, at the uncached path's cost past the
    window; a larger `slide` is faster, each token then seeing at least `n_ctx - slide +
    1` tokens. Within `n_ctx` tokens `slide` changes nothing.

    `cache=False` runs the pipeline on the whole window for every token (the reference
    path: the same tokens, up to float rounding in the logits).

    Batch prompts of one length with `jax.vmap`, one key each:
    `jax.vmap(lambda p, k: generate(gpt, weights, p, n, k))(prompts, keys)`; the loop's
    control flow depends on the lengths only, so it stays one loop for the batch.

    Args:
        gpt: a component made by `Gpt.make`.
        weights: its weights.
        prompt: `[P]` token ids, `P >= 1`.
        n_tokens: how many tokens to add.
        rng: a PRNG key.
        temperature: > 0; lower is greedier.
        top_k: keep only the `top_k` most likely tokens at each step.
        slide: how far the window moves at a time past `n_ctx` tokens, in `[1, n_ctx]`.
        cache: decode with the key/value caches (else re-run the window for every token).

    Returns:
        `[P + n_tokens]` token ids: the prompt, then the sample.

    Raises:
        ValueError: an argument is out of range.
    """
    n_ctx = gpt.limits["T"]
    if prompt.ndim != 1 or prompt.shape[0] < 1:
        raise ValueError(f"`generate` takes a prompt of shape [P] with P >= 1, got shape {prompt.shape}")
    if n_tokens < 0 or temperature <= 0 or (top_k is not None and top_k < 1) or not 1 <= slide <= n_ctx:
        raise ValueError(
            f"`generate` needs n_tokens >= 0, temperature > 0, top_k >= 1, 1 <= slide <= n_ctx={n_ctx}; "
            f"got {n_tokens}, {temperature}, {top_k}, {slide}"
        )
    if n_tokens == 0:
        return prompt.astype(jnp.int32)
    sampler = (_cached_sampler if cache else _sampler)(gpt, int(prompt.shape[0]), n_tokens, top_k, slide)
    tokens: Array = sampler(weights, prompt.astype(jnp.int32), rng, jnp.asarray(temperature, jnp.float32))
    return tokens


def _draw(logits: Array, rng: Array, i: Array, temperature: Array, top_k: int | None) -> Array:
    """Token `i`, drawn from `softmax(logits / temperature)` among the `top_k` most likely, with `fold_in(rng, i)`."""
    logits = logits / temperature
    if top_k is not None:
        cutoff = jax.lax.top_k(logits, top_k)[0][-1]
        logits = jnp.where(logits < cutoff, -jnp.inf, logits)
    return jr.categorical(jr.fold_in(rng, i), logits).astype(jnp.int32)


@functools.lru_cache(maxsize=32)
def _sampler(gpt: jm.Component, prompt_length: int, n_tokens: int, top_k: int | None, slide: int) -> jax.stages.Wrapped:
    """The uncached sampler: the pipeline on the last `n_ctx` tokens (at most) for every token."""
    del slide  # the window moves by one token at a time
    n_ctx = gpt.limits["T"]
    window = min(n_ctx, prompt_length + n_tokens)
    pipeline = gpt.pipeline

    def sample(weights: jm.Weights, prompt: Array, rng: Array, temperature: Array) -> Array:
        buffer = jnp.zeros(prompt_length + n_tokens, jnp.int32).at[:prompt_length].set(prompt)

        def step(i: Array, buffer: Array) -> Array:
            length = prompt_length + i
            start = jnp.maximum(length - window, 0)
            context = jax.lax.dynamic_slice(buffer, (start,), (window,))
            logits = pipeline(weights, context, None)[length - 1 - start]
            return buffer.at[length].set(_draw(logits, rng, i, temperature, top_k))

        sampled: Array = jax.lax.fori_loop(0, n_tokens, step, buffer)
        return sampled

    return jax.jit(sample)


@functools.lru_cache(maxsize=32)
def _cached_sampler(
    gpt: jm.Component, prompt_length: int, n_tokens: int, top_k: int | None, slide: int
) -> jax.stages.Wrapped:
    """The cached sampler: the prompt in one call, then one token per step against the caches.

    The loop carries the token buffer, the logits of the next token, the caches, and
    `start`, the buffer index of the token in the caches' slot 0 (the window's start).
    `start` depends on the step only, never on the tokens, so under `jax.vmap` the choice
    between decoding one token and refilling the window stays a `lax.cond`.
    """
    n_ctx = gpt.limits["T"]
    process = gpt.get_process(CACHE_PORTS)
    refill_length = n_ctx - slide + 1  # the tokens run afresh when the window moves

    def run(weights: jm.Weights, tokens: Array, caches: dict[str, Array], position: Array) -> tuple[Array, Any]:
        outputs = process(weights, {jm.Input: tokens, **caches, "position": position}, None)
        return outputs[jm.Output][-1], {name: outputs[name] for name in caches}

    def sample(weights: jm.Weights, prompt: Array, rng: Array, temperature: Array) -> Array:
        buffer = jnp.zeros(prompt_length + n_tokens, jnp.int32).at[:prompt_length].set(prompt)
        first = max(prompt_length - n_ctx, 0)
        logits, caches = run(weights, prompt[first:], empty_cache(gpt), jnp.int32(0))

        def step(i: Array, carry: tuple[Array, Array, Any, Array]) -> tuple[Array, Array, Any, Array]:
            buffer, logits, caches, start = carry
            length = prompt_length + i  # the buffer index of the new token
            token = _draw(logits, rng, i, temperature, top_k)
            buffer = buffer.at[length].set(token)

            def decode() -> tuple[Array, Any, Array]:
                return (*run(weights, token[None], caches, length - start), start)

            def refill() -> tuple[Array, Any, Array]:
                new_start = length + 1 - refill_length
                window = jax.lax.dynamic_slice(buffer, (new_start,), (refill_length,))
                return (*run(weights, window, caches, jnp.int32(0)), new_start)

            if prompt_length + n_tokens <= n_ctx:  # the window never moves
                return (buffer, *decode())
            return (buffer, *jax.lax.cond(length - start < n_ctx, decode, refill))

        carry = (buffer, logits, caches, jnp.int32(first))
        buffer, logits, _, _ = jax.lax.fori_loop(0, n_tokens - 1, step, carry)
        last = prompt_length + n_tokens - 1
        sampled: Array = buffer.at[last].set(_draw(logits, rng, jnp.int32(n_tokens - 1), temperature, top_k))
        return sampled

    return jax.jit(sample)
