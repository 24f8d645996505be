"""The bundled training jobs: a ViT or a ResNet on handwritten digits, a GPT on characters."""

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import numpy.typing as npt
from jax import Array

import jaxmake as jm
from jaxmake import data, training
from jaxmake.components import LOSS_PORTS, Gpt, ResNet, Vit, softmax_cross_entropy

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
    positional_encode_strategy="naive_sum",
    pool="mean",
)
"""The seed's ViT adapted to 8x8 digits: four 4x4 patches, 2 layers of width 64, additive
positions and logits read from the mean of the patch tokens."""

DIGITS_RESNET = ResNet(hwc=(8, 8, 1), n_classes=10, widths=(32, 64), blocks_per_stage=2)
"""A small ResNet for 8x8 digits: 8x8x32, then 4x4x64, two residual blocks per stage."""

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


def digits_task(
    vit: Vit, split: data.ArraySplit, batch_size: int, seed: int, augment: bool, label_smoothing: float = 0.0
) -> training.Task:
    """Cross-entropy (with `label_smoothing`) of the ViT's logits on shuffled (and shifted) training batches."""
    component = Vit.make(vit)
    logits_of = component.get_process(jm.make_ports(jm.Input, "logits"))
    evaluate_logits = jax.jit(jax.vmap(lambda w, x: logits_of(w, {jm.Input: x}, None)["logits"], in_axes=(None, 0)))
    return training.Task(
        vit_loss(component, label_smoothing),
        _digits_batches(split, batch_size, seed, augment),
        lambda weights: _test_metrics(evaluate_logits(weights, split.x_test), split),
    )


def digits_resnet_task(
    resnet: ResNet, split: data.ArraySplit, batch_size: int, seed: int, augment: bool, label_smoothing: float = 0.0
) -> training.StatefulTask:
    """Cross-entropy (with `label_smoothing`) of the ResNet's logits on shuffled (and shifted) batches, with state.

    Training normalises by the batch's statistics (the BatchNorms average over the `vmap`
    axis `resnet.axis_name`); evaluation uses the running ones.
    """
    component = ResNet.make(resnet)
    evaluate_logits = jax.jit(
        jax.vmap(lambda w, s, x: component.apply(w, x, s, train=False)[0], in_axes=(None, None, 0))
    )
    return training.StatefulTask(
        resnet_loss(component, resnet.axis_name, label_smoothing),
        _digits_batches(split, batch_size, seed, augment),
        lambda weights, state: _test_metrics(evaluate_logits(weights, state, split.x_test), split),
    )


def vit_loss(vit: jm.Component, label_smoothing: float = 0.0) -> training.LossFn:
    """A made `Vit`'s training loss on a batch `{"x": [batch, *hwc], "y": int [batch]}`: cross-entropy, and accuracy."""
    logits_of = vit.get_process(jm.make_ports(jm.Input, "logits"))

    def loss(weights: jm.Weights, batch: Mapping[str, Array], rng: Array) -> tuple[Array, dict[str, Array]]:
        keys = jr.split(rng, batch["x"].shape[0])
        logits = jax.vmap(logits_of, in_axes=(None, 0, 0))(weights, {jm.Input: batch["x"]}, keys)["logits"]
        return _classification_loss(logits, batch["y"], label_smoothing)

    return loss


def resnet_loss(
    component: jm.Component, axis_name: str | None, label_smoothing: float = 0.0
) -> training.StatefulLossFn:
    """A made `ResNet`'s training loss on `{"x": [batch, *hwc], "y": int [batch]}`.

    It normalises by the batch's statistics: the examples are mapped over `axis_name`
    (the config's `axis_name`), which its BatchNorms average over.
    """

    def loss(
        weights: jm.Weights, state: jm.Weights, batch: Mapping[str, Array], rng: Array
    ) -> tuple[Array, tuple[dict[str, Array], jm.Weights]]:
        def train(x: Array) -> tuple[Array, jm.Weights]:
            return component.apply(weights, x, state, train=True)

        logits, new_state = jax.vmap(train, axis_name=axis_name, out_axes=(0, None))(batch["x"])
        value, metrics = _classification_loss(logits, batch["y"], label_smoothing)
        return value, (metrics, new_state)

    return loss


def _classification_loss(logits: Array, labels: Array, label_smoothing: float) -> tuple[Array, dict[str, Array]]:
    """The mean cross-entropy (with `label_smoothing`), and the batch's accuracy as a metric."""
    accuracy = jnp.mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32))
    return softmax_cross_entropy(logits, labels, label_smoothing).mean(), {"accuracy": accuracy}


def _test_metrics(logits: Array, split: data.ArraySplit) -> dict[str, float]:
    """Accuracy and mean cross-entropy of the test images' logits."""
    labels = jnp.asarray(split.y_test)
    return {
        "test_accuracy": float(jnp.mean(jnp.argmax(logits, -1) == labels)),
        "test_loss": float(softmax_cross_entropy(logits, labels).mean()),
    }


def _digits_batches(
    split: data.ArraySplit, batch_size: int, seed: int, augment: bool
) -> Callable[[int], dict[str, npt.NDArray[Any]]]:
    """Shuffled training batches, each image shifted by up to one pixel with `augment`."""
    batches = training.shuffled_batches({"x": split.x_train, "y": split.y_train}, batch_size, seed)

    def batch(step: int) -> dict[str, npt.NDArray[Any]]:
        chosen = batches(step)
        return {
            **chosen,
            "x": random_shifts(chosen["x"], np.random.default_rng((seed, step))) if augment else chosen["x"],
        }

    return batch


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
    return training.Task(gpt_loss(component), batch, lambda weights: {"valid_loss": float(valid_loss(weights))})


def gpt_loss(gpt: jm.Component) -> training.LossFn:
    """A made `Gpt`'s training loss on `{"inputs": int [batch, n_ctx], "targets": int [batch, n_ctx]}`."""
    loss_of = gpt.get_process(LOSS_PORTS)

    def loss(weights: jm.Weights, batch: Mapping[str, Array], rng: Array) -> tuple[Array, dict[str, Array]]:
        keys = jr.split(rng, batch["inputs"].shape[0])
        losses = jax.vmap(loss_of, in_axes=(None, 0, 0))(
            weights, {jm.Input: batch["inputs"], "targets": batch["targets"]}, keys
        )
        return losses["loss"].mean(), {}

    return loss


def chars_gpt(vocab_size: int, **overrides: Any) -> Gpt:
    """The character GPT for a vocabulary of `vocab_size`."""
    return Gpt(vocab_size=vocab_size, **{**CHARS_GPT_FIELDS, **overrides})
