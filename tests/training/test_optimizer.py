"""`make_schedule`, `decay_mask`, `make_optimizer`: values checked against closed forms."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxmake.training import TrainConfig, decay_mask, make_optimizer, make_schedule


def _structure(tree: object) -> str:
    """The tree structure as text (`PyTreeDef` equality is untyped)."""
    return str(jax.tree.structure(tree))


def _values(config: TrainConfig, steps: list[int]) -> list[float]:
    """The schedule at each step, computed in one compiled program."""
    schedule = make_schedule(config)
    values = jax.jit(jax.vmap(lambda s: jnp.asarray(schedule(s))))(jnp.asarray(steps))
    return [float(v) for v in values]


def test_warmup_then_cosine() -> None:
    config = TrainConfig(steps=200, learning_rate=2e-3, warmup_fraction=0.05)
    steps = [0, 5, 10, 11, 105, 150, 199, 200]
    expected = [0.0, 1e-3, 2e-3] + [1e-3 * (1 + math.cos(math.pi * (s - 10) / 190)) for s in steps[3:]]
    np.testing.assert_allclose(_values(config, steps), expected, rtol=1e-5, atol=1e-9)


def test_warmup_then_constant() -> None:
    config = TrainConfig(steps=100, learning_rate=0.5, warmup_fraction=0.1, schedule="constant")
    np.testing.assert_allclose(_values(config, [0, 4, 10, 50, 99]), [0.0, 0.2, 0.5, 0.5, 0.5], rtol=1e-6)


def test_no_warmup_starts_at_the_peak() -> None:
    config = TrainConfig(steps=10, learning_rate=1.0, warmup_fraction=0.0)
    np.testing.assert_allclose(_values(config, [0, 5, 10]), [1.0, 0.5, 0.0], atol=1e-6)


def test_decay_mask_selects_matrices_only() -> None:
    weights = {"w": jnp.ones((2, 3)), "emb": jnp.ones((4, 2, 2)), "b": jnp.ones(3), "s": jnp.ones(()), "d": {}}
    assert decay_mask(weights) == {"w": True, "emb": True, "b": False, "s": False, "d": {}}


@pytest.mark.parametrize("weight_decay", [0.0, 0.5])
def test_weight_decay_shrinks_matrices_only(weight_decay: float) -> None:
    """With zero gradients, AdamW's only move is the decay: `w -= lr * weight_decay * w`."""
    config = TrainConfig(
        steps=10, learning_rate=0.1, warmup_fraction=0.0, schedule="constant", weight_decay=weight_decay
    )
    optimizer = make_optimizer(config)
    weights = {"w": jnp.full((2, 2), 2.0), "b": jnp.full((2,), 2.0)}

    @jax.jit
    def update(weights: dict[str, jax.Array]) -> dict[str, jax.Array]:
        grads = jax.tree.map(jnp.zeros_like, weights)
        updates, _ = optimizer.update(grads, optimizer.init(weights), weights)
        new: dict[str, jax.Array] = optax.apply_updates(weights, updates)
        return new

    new = update(weights)
    np.testing.assert_allclose(new["w"], 2.0 - 0.1 * weight_decay * 2.0, rtol=1e-6)
    np.testing.assert_array_equal(new["b"], weights["b"])


def test_gradients_are_clipped_to_clip_norm() -> None:
    """SGD-like first Adam step hides the norm, so look at the clipping stage alone."""
    config = TrainConfig(steps=10, clip_norm=0.5)
    clip = optax.clip_by_global_norm(config.clip_norm)
    grads = {"w": jnp.full((2, 2), 3.0), "b": jnp.full((2,), 4.0)}
    clipped, _ = jax.jit(lambda g: clip.update(g, clip.init(g)))(grads)
    norm = np.sqrt(sum(np.sum(np.square(x)) for x in jax.tree.leaves(clipped)))
    assert norm == pytest.approx(0.5, rel=1e-6)
    # and make_optimizer's chain starts with exactly that stage: same state structure
    state = make_optimizer(config).init(grads)
    assert _structure(state[0]) == _structure(clip.init(grads))
