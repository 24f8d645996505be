"""`Gpt`: a decoder-only language model, and `generate` to sample from it."""

import functools
from collections.abc import Mapping
from dataclasses import KW_ONLY
from typing import Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float32, Int

import jaxmake as jm
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
      of `targets [T]` (the tokens shifted by one) under the logits, in float32.

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

        def logits(weights: jm.Weights, tokens: Array, rng: Array | None) -> Array:
            x = c.encoder(weights, c.positional_encoding(weights, c.embedding(weights, tokens)), rng)
            head = c.lm_head.weights(weights)  # the head's product accumulated in float32, not rounded to `dtype`
            y = policy.einsum("td,dv->tv", x, head["w"], float32_result=True) + head["b"].astype(jnp.float32)
            sliced: Array = y[:, :vocab]
            return sliced

        def pipeline(weights: jm.Weights, inputs: Mapping[str, Array], rng: Array | None) -> dict[str, Array]:
            return {jm.Output: logits(weights, inputs[jm.Input], rng)}

        def loss(weights: jm.Weights, inputs: Mapping[str, Array], rng: Array | None) -> dict[str, Array]:
            losses = softmax_cross_entropy(logits(weights, inputs[jm.Input], rng), inputs["targets"])
            return {"loss": losses.mean()}

        processes = {_PIPELINE_PORTS: pipeline, LOSS_PORTS: loss}
        fixed = config.dropout_keep_rate == 1.0
        return jm.Component(c.weight_params, processes, fixed=fixed, dims=config, limits={"T": config.n_ctx})


def generate(
    gpt: jm.Component,
    weights: jm.Weights,
    prompt: Int[Array, " P"],
    n_tokens: int,
    rng: Array,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
) -> Int[Array, " P+{n_tokens}"]:
    """Sample `n_tokens` tokens after `prompt` from a `Gpt` component, without dropout.

    Each step runs the model on the last `n_ctx` tokens (no cache) and samples from
    `softmax(logits / temperature)`, restricted to the `top_k` most likely tokens when
    given. The whole loop is one `jax.lax.fori_loop`, compiled once per prompt length,
    `n_tokens` and `top_k` (not once per token); a fixed `rng` gives a fixed sample.

    Args:
        gpt: a component made by `Gpt.make`.
        weights: its weights.
        prompt: `[P]` token ids, `P >= 1`.
        n_tokens: how many tokens to add.
        rng: a PRNG key.
        temperature: > 0; lower is greedier.
        top_k: keep only the `top_k` most likely tokens at each step.

    Returns:
        `[P + n_tokens]` token ids: the prompt, then the sample.

    Raises:
        ValueError: an argument is out of range.
    """
    if prompt.ndim != 1 or prompt.shape[0] < 1:
        raise ValueError(f"`generate` takes a prompt of shape [P] with P >= 1, got shape {prompt.shape}")
    if n_tokens < 0 or temperature <= 0 or (top_k is not None and top_k < 1):
        raise ValueError(
            f"`generate` needs n_tokens >= 0, temperature > 0, top_k >= 1; got {n_tokens}, {temperature}, {top_k}"
        )
    sampler = _sampler(gpt, int(prompt.shape[0]), n_tokens, top_k)
    tokens: Array = sampler(weights, prompt.astype(jnp.int32), rng, jnp.asarray(temperature, jnp.float32))
    return tokens


@functools.lru_cache(maxsize=32)
def _sampler(gpt: jm.Component, prompt_length: int, n_tokens: int, top_k: int | None) -> jax.stages.Wrapped:
    n_ctx = gpt.limits["T"]
    window = min(n_ctx, prompt_length + n_tokens)
    pipeline = gpt.pipeline

    def sample(weights: jm.Weights, prompt: Array, rng: Array, temperature: Array) -> Array:
        buffer = jnp.zeros(prompt_length + n_tokens, jnp.int32).at[:prompt_length].set(prompt)

        def step(i: Array, buffer: Array) -> Array:
            length = prompt_length + i
            start = jnp.maximum(length - window, 0)
            context = jax.lax.dynamic_slice(buffer, (start,), (window,))
            logits = pipeline(weights, context, None)[length - 1 - start] / temperature
            if top_k is not None:
                cutoff = jax.lax.top_k(logits, top_k)[0][-1]
                logits = jnp.where(logits < cutoff, -jnp.inf, logits)
            token = jr.categorical(jr.fold_in(rng, i), logits).astype(jnp.int32)
            return buffer.at[length].set(token)

        sampled: Array = jax.lax.fori_loop(0, n_tokens, step, buffer)
        return sampled

    return jax.jit(sample)
