"""Freezing and learning-rate factors by weight-path patterns (`TrainConfig.freeze`, `learning_rate_factors`)."""

import json
import math
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from jax import Array

import jaxmake as jm
from jaxmake.training import Batch, Task, TrainConfig, make_optimizer, shuffled_batches, train, weight_labels

SPEC = {
    "body": {"w": jm.WeightParams((3, 4)), "b": jm.WeightParams((4,), init="zeros")},
    "head": {"w": jm.WeightParams((4, 1)), "b": jm.WeightParams((1,), init="zeros")},
}
WEIGHTS = jm.make_weights(jr.key(0), SPEC)


def _data() -> dict[str, np.ndarray[Any, Any]]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype(np.float32)
    return {"x": x, "y": np.tanh(x @ np.array([[1.0], [-2.0], [0.5]], np.float32))}


def _loss(weights: jm.Weights, batch: Batch, rng: Array) -> tuple[Array, dict[str, Array]]:
    hidden = jnp.tanh(batch["x"] @ weights["body"]["w"] + weights["body"]["b"])
    return jnp.mean((hidden @ weights["head"]["w"] + weights["head"]["b"] - batch["y"]) ** 2), {}


TASK = Task(_loss, shuffled_batches(_data(), 16, 0))


def _config(**fields: Any) -> TrainConfig:
    return TrainConfig(**{"steps": 6, "batch_size": 16, "learning_rate": 0.1, "log_every": 1, **fields})


def _assert_equal(a: Any, b: Any) -> None:
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_labels_follow_gitignore_rules_and_the_last_factor_wins() -> None:
    config = _config(
        freeze=("*", "!head", "head.b"), learning_rate_factors=(("*.w", 0.5), ("head", 2.0), ("body.b", 1.0))
    )
    assert weight_labels(config, WEIGHTS) == {
        "body": {"w": "frozen", "b": "frozen"},
        "head": {"w": "lr_x2.0", "b": "frozen"},
    }
    only_factors = _config(learning_rate_factors=(("*.w", 0.5), ("head", 2.0), ("body.b", 1.0)))
    assert weight_labels(only_factors, SPEC) == {
        "body": {"w": "lr_x0.5", "b": "trained"},
        "head": {"w": "lr_x2.0", "b": "lr_x2.0"},
    }


def test_a_pattern_that_selects_nothing_fails_before_training(tmp_path: Path) -> None:
    for config, where, nearest in [
        (_config(freeze=("body", "!hed.*")), "freeze` item 1", "`head`"),
        (_config(learning_rate_factors=(("boddy.w", 0.1),)), "learning_rate_factors` item 0", "`body.w`"),
    ]:
        with pytest.raises(jm.WeightsError) as error:
            train(TASK, WEIGHTS, config, tmp_path, progress="off")
        message = str(error.value)
        assert message.startswith(f"`TrainConfig.{where}: the weight-path pattern `")
        assert "selects no weight; the nearest paths are `" in message
        assert f"the nearest paths are {nearest}" in message
    assert not list(tmp_path.iterdir())  # nothing written, nothing compiled


class _Crash(Exception):
    pass


def test_frozen_weights_stay_bit_identical_through_training_and_resume(tmp_path: Path) -> None:
    config = _config(freeze=("body",), checkpoint_every=3)
    straight = train(TASK, WEIGHTS, config, tmp_path / "straight", progress="off")
    _assert_equal(straight.weights["body"], WEIGHTS["body"])
    assert not np.array_equal(straight.weights["head"]["w"], WEIGHTS["head"]["w"])
    assert straight.history[-1]["loss"] < straight.history[0]["loss"]

    def crashing(step: int) -> Batch:
        if step == 4:
            raise _Crash
        return TASK.batch(step)

    with pytest.raises(_Crash):  # dies after the checkpoint of step 3
        train(Task(_loss, crashing), WEIGHTS, config, tmp_path / "resumed", progress="off")
    resumed = train(TASK, WEIGHTS, config, tmp_path / "resumed", resume=True, progress="off")
    _assert_equal(resumed.weights, straight.weights)
    _assert_equal(resumed.opt_state, straight.opt_state)
    _assert_equal(resumed.weights["body"], WEIGHTS["body"])
    saved = json.loads((tmp_path / "straight" / "config.json").read_text())["train"]
    assert TrainConfig(**saved) == config  # the freeze list is in config.json, and reads back


def test_frozen_weights_hold_no_optimizer_state() -> None:
    optimizer = make_optimizer(_config(freeze=("*", "!head.w")))
    state = optimizer.init(WEIGHTS)
    moments = [leaf.shape for leaf in jax.tree.leaves(state) if jnp.ndim(leaf) > 0]
    assert moments == [(4, 1), (4, 1)]  # Adam's two moments of `head.w`, nothing for the others


def test_factors_scale_the_updates_and_frozen_gradients_are_not_clipped() -> None:
    grads = jax.tree.map(jnp.ones_like, WEIGHTS)
    plain = make_optimizer(_config(clip_norm=1.0, warmup_fraction=0.0))
    scaled = make_optimizer(_config(clip_norm=1.0, warmup_fraction=0.0, learning_rate_factors=(("head.*", 0.25),)))
    reference, _ = plain.update(grads, plain.init(WEIGHTS), WEIGHTS)
    updates, _ = scaled.update(grads, scaled.init(WEIGHTS), WEIGHTS)
    _assert_equal(updates["body"], reference["body"])
    np.testing.assert_allclose(updates["head"]["w"], 0.25 * reference["head"]["w"], rtol=1e-6)

    frozen = make_optimizer(_config(clip_norm=1e-3, freeze=("body",), warmup_fraction=0.0))
    huge = {"body": jax.tree.map(lambda x: 1e6 * x, grads["body"]), "head": grads["head"]}
    first, _ = frozen.update(grads, frozen.init(WEIGHTS), WEIGHTS)
    second, _ = frozen.update(huge, frozen.init(WEIGHTS), WEIGHTS)
    _assert_equal(second, first)  # the frozen body's gradient is out of the clipping norm
    assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree.leaves(first["body"]))
    assert math.isfinite(float(first["head"]["w"][0, 0])) and float(jnp.abs(first["head"]["w"]).min()) > 0


def test_the_config_checks_its_patterns() -> None:
    with pytest.raises(jm.ConfigError, match=r"^`TrainConfig.freeze`=\('!',\) item 0: a pattern must not be empty$"):
        _config(freeze=("!",))
    with pytest.raises(jm.ConfigError, match=r"^`TrainConfig.learning_rate_factors`=.* item 0: item 1: must be > 0.0$"):
        _config(learning_rate_factors=(("head", 0.0),))
