"""Activations and losses: plain functions of arrays, elementwise or per example."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from jaxmake.components._fields import Activation

_ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "relu": jax.nn.relu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=True),
    "tanh": jnp.tanh,
    "silu": jax.nn.silu,
}


def activation(name: Activation) -> Callable[[Array], Array]:
    """The activation function called `name`, applied elementwise.

    * `"relu"`: `max(x, 0)`;
    * `"gelu"`: `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`, the tanh approximation
      (Hendrycks and Gimpel, 2016) used by GPT-2;
    * `"tanh"`;
    * `"silu"`: `x * sigmoid(x)` (Elfwing et al., 2017).
    """
    return _ACTIVATIONS[name]


def softmax_cross_entropy(
    logits: Float[Array, "*batch n"], labels: Int[Array, "*batch"], label_smoothing: float = 0.0
) -> Float[Array, "*batch"]:
    """`-log softmax(logits)[label]` for integer class labels, per example.

    With `label_smoothing` `s` in [0, 1), the target puts `1 - s` on the label and spreads
    `s` evenly over all `n` classes (Szegedy et al., 2016): `(1 - s) * nll - s * mean(log
    softmax(logits))`, as `optax.smooth_labels` then cross-entropy.
    """
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]
    if not label_smoothing:
        return nll
    return (1.0 - label_smoothing) * nll - label_smoothing * log_probs.mean(axis=-1)


def sigmoid_cross_entropy(logits: Float[Array, "*shape"], labels: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
    """Binary cross-entropy of `sigmoid(logits)` against labels in [0, 1], elementwise.

    Computed stably as `max(z, 0) - z y + log(1 + exp(-|z|))`.
    """
    return jnp.maximum(logits, 0) - logits * labels + jnp.log1p(jnp.exp(-jnp.abs(logits)))


def l1_loss(predictions: Float[Array, "*shape"], targets: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
    """`|predictions - targets|`, elementwise."""
    return jnp.abs(predictions - targets)


def l2_loss(predictions: Float[Array, "*shape"], targets: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
    """`(predictions - targets)**2 / 2`, elementwise (the optax convention)."""
    return 0.5 * jnp.square(predictions - targets)
