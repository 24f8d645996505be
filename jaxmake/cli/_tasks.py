"""The two bundled training jobs: a ViT on handwritten digits, a GPT on characters."""

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import numpy.typing as npt
from jax import Array

import jaxmake as jm
from jaxmake import data, training
from jaxmake.components import LOSS_PORTS, Gpt, Vit, softmax_cross_entropy

DIGITS_VIT = Vit(
    n_tfe_layers=2,
    n_heads=4,
    dim_model=64,
    mlp_n_hidden=(128,),
    mlp_activation="gelu",
    hwc=(8, 8, 1),
    n_patches_side=2,
    mlp_n_hidden_patches=(64,),
    dict_size_output=10,
    dict_init_scale=0.1,
    pos_init_scale=0.02,
    positional_encode_strategy="sum",
)
"""The seed's ViT adapted to 8x8 digits: four 4x4 patches, 2 layers of width 64."""

CHARS_GPT_FIELDS: Mapping[str, Any] = {
    "n_ctx": 64,
    "n_tfe_layers": 2,
    "n_heads": 4,
    "dim_model": 128,
    "mlp_n_hidden": (512,),
    "mlp_activation": "gelu",
    "pos_init_scale": 0.02,
    "vocab_multiple": 64,
}
"""The character GPT's fields (its `vocab_size` comes from the corpus, padded to a multiple of 64
so that `--rules tp` can split the vocabulary over a `model` axis of up to 64 devices)."""


def digits_task(vit: Vit, split: data.ArraySplit, batch_size: int, seed: int, augment: bool) -> training.Task:
    """Cross-entropy of the ViT's logits on shuffled (and shifted) training batches."""
    component = Vit.make(vit)
    logits_of = component.get_process(jm.make_ports(jm.Input, "logits"))

    def loss(weights: jm.Weights, batch: Mapping[str, Array], rng: Array) -> tuple[Array, dict[str, Array]]:
        keys = jr.split(rng, batch["x"].shape[0])
        logits = jax.vmap(logits_of, in_axes=(None, 0, 0))(weights, {jm.Input: batch["x"]}, keys)["logits"]
        accuracy = jnp.mean((jnp.argmax(logits, -1) == batch["y"]).astype(jnp.float32))
        return softmax_cross_entropy(logits, batch["y"]).mean(), {"accuracy": accuracy}

    batches = training.shuffled_batches({"x": split.x_train, "y": split.y_train}, batch_size, seed)
    evaluate_logits = jax.jit(jax.vmap(lambda w, x: logits_of(w, {jm.Input: x}, None)["logits"], in_axes=(None, 0)))

    def evaluate(weights: jm.Weights) -> dict[str, float]:
        logits = evaluate_logits(weights, split.x_test)
        labels = jnp.asarray(split.y_test)
        return {
            "test_accuracy": float(jnp.mean(jnp.argmax(logits, -1) == labels)),
            "test_loss": float(softmax_cross_entropy(logits, labels).mean()),
        }

    def batch(step: int) -> dict[str, npt.NDArray[Any]]:
        chosen = batches(step)
        return {
            **chosen,
            "x": random_shifts(chosen["x"], np.random.default_rng((seed, step))) if augment else chosen["x"],
        }

    return training.Task(loss, batch, evaluate)


def random_shifts(images: npt.NDArray[Any], rng: np.random.Generator) -> npt.NDArray[Any]:
    """Each image `[H, W, C]` moved by -1, 0 or +1 pixel along each axis, zeros filling in."""
    n, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)))
    dy, dx = rng.integers(0, 3, size=(2, n))
    rows = dy[:, None] + np.arange(h)[None, :]
    cols = dx[:, None] + np.arange(w)[None, :]
    shifted: npt.NDArray[Any] = padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
    return shifted


def chars_task(gpt: Gpt, text: data.TextSplit, batch_size: int, seed: int, n_valid: int = 64) -> training.Task:
    """Next-character cross-entropy on random windows; validation on fixed windows."""
    component = Gpt.make(gpt)
    loss_of = component.get_process(LOSS_PORTS)

    def loss(weights: jm.Weights, batch: Mapping[str, Array], rng: Array) -> tuple[Array, dict[str, Array]]:
        keys = jr.split(rng, batch["inputs"].shape[0])
        losses = jax.vmap(loss_of, in_axes=(None, 0, 0))(
            weights, {jm.Input: batch["inputs"], "targets": batch["targets"]}, keys
        )
        return losses["loss"].mean(), {}

    def batch(step: int) -> dict[str, npt.NDArray[Any]]:
        inputs, targets = data.random_windows(text.train, gpt.n_ctx, batch_size, np.random.default_rng((seed, step)))
        return {"inputs": inputs, "targets": targets}

    windows = data.contiguous_windows(text.valid, gpt.n_ctx)
    valid_inputs, valid_targets = (jnp.asarray(w[:n_valid]) for w in windows)
    valid_loss = jax.jit(
        lambda w: jax.vmap(loss_of, in_axes=(None, 0, None))(
            w, {jm.Input: valid_inputs, "targets": valid_targets}, None
        )["loss"].mean()
    )
    return training.Task(loss, batch, lambda weights: {"valid_loss": float(valid_loss(weights))})


def chars_gpt(vocab_size: int, **overrides: Any) -> Gpt:
    """The character GPT for a vocabulary of `vocab_size`."""
    return Gpt(vocab_size=vocab_size, **{**CHARS_GPT_FIELDS, **overrides})
