"""Dynamic loss scaling: its rule alone, then in `train` on a tiny linear model computed in float16.

The model computes its predictions in float16 and its loss in float32, as a float16 library
model does. One run (`straight`, 8 steps, the scale doubling every 2 finite steps, an
overflowing batch at step 4) is made once for the module; the other tests compare with it.
"""

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from jax import Array

import jaxmake as jm
from jaxmake.training import (
    Batch,
    Checkpoints,
    LossScale,
    LossScaledState,
    Task,
    TrainConfig,
    TrainingDiverged,
    TrainResult,
    load_weights,
    shuffled_batches,
    train,
)
from jaxmake.training._loss_scale import (
    INITIAL_SCALE,
    all_finite,
    init_loss_scale,
    next_loss_scale,
    scaled_value_and_grad,
    select_tree,
)

# The rule alone.


def _after(steps: list[bool], period: int, state: LossScale | None = None) -> list[tuple[float, int]]:
    """`(scale, finite_steps)` after each step of `steps` (whether its gradients were finite), jitted."""
    adjust = jax.jit(next_loss_scale, static_argnums=2)
    state = init_loss_scale() if state is None else state
    seen = []
    for finite in steps:
        state = adjust(state, jnp.asarray(finite), period)
        seen.append((float(state.scale), int(state.finite_steps)))
    return seen


def test_the_scale_halves_at_each_overflow_and_doubles_after_period_finite_steps() -> None:
    s = INITIAL_SCALE
    assert _after([True, True, True, False, False, True, True, True], period=3) == [
        (s, 1),
        (s, 2),
        (2 * s, 0),
        (s, 0),
        (s / 2, 0),
        (s / 2, 1),
        (s / 2, 2),
        (s, 0),
    ]
    assert _after([True, True], period=1) == [(2 * s, 0), (4 * s, 0)]


def test_the_scale_may_fall_below_1_but_never_doubles_to_inf() -> None:
    assert _after([False, False], period=2, state=init_loss_scale(1.0)) == [(0.5, 0), (0.25, 0)]
    top = init_loss_scale(2.0**127)  # float32's largest power of 2
    assert _after([True, True], period=1, state=top) == [(2.0**127, 0), (2.0**127, 0)]


def test_all_finite_and_select_tree() -> None:
    tree = {"a": jnp.ones(3), "b": (jnp.zeros((2, 2), jnp.float16), jnp.float32(2.0))}
    assert bool(all_finite(tree)) and bool(all_finite({}))
    for bad in (jnp.inf, -jnp.inf, jnp.nan):
        assert not bool(jax.jit(all_finite)({**tree, "a": jnp.array([1.0, bad, 1.0])}))
    other = jax.tree.map(lambda x: x + 1, tree)
    for pred, expected in ((False, tree), (True, other)):
        selected = select_tree(jnp.asarray(pred), other, tree)
        jax.tree.map(np.testing.assert_array_equal, selected, expected)
        assert jax.tree.map(lambda x: x.dtype, selected) == jax.tree.map(lambda x: x.dtype, tree)


def _half_loss(w: Array) -> tuple[Array, dict[str, Array]]:
    """A float16 computation whose gradient, 1e-8 * x, is below float16's smallest subnormal (6e-8)."""
    x = jnp.array([1.0, 2.0, 3.0], jnp.float16)
    return jnp.sum(jnp.square(w.astype(jnp.float16) * x).astype(jnp.float32)) * 1e-8 / 2, {}


def test_scaling_keeps_small_float16_gradients_from_underflowing() -> None:
    w = jnp.ones(3)
    (_, _), plain = jax.value_and_grad(_half_loss, has_aux=True)(w)
    (value, aux), scaled = scaled_value_and_grad(_half_loss, jnp.float32(INITIAL_SCALE))(w)
    assert np.array_equal(plain, np.zeros(3))  # underflowed: the weights would never move
    np.testing.assert_allclose(scaled, [1e-8, 4e-8, 9e-8], rtol=1e-3)
    assert scaled.dtype == jnp.float32 and float(value) == pytest.approx(7e-8) and aux == {}


# In `train`.

SPEC = {"w": jm.WeightParams((3, 1), scale=0.1), "b": jm.WeightParams((1,), init="zeros")}
OVERFLOW = 3
"""The batch (0-based) whose gradients overflow float16 at the scale of its step, but not unscaled."""


def _data() -> dict[str, np.ndarray[Any, Any]]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype(np.float32)
    y = 0.01 * (x @ np.array([[1.0], [-2.0], [0.5]], np.float32)) + 0.01
    return {"x": x, "y": y}


def _loss(weights: jm.Weights, batch: Batch, rng: Array) -> tuple[Array, dict[str, Array]]:
    """Mean squared error of a linear model computed in float16; the loss in float32."""
    del rng
    half = jax.tree.map(lambda w: w.astype(jnp.float16), weights)
    error = batch["x"].astype(jnp.float16) @ half["w"] + half["b"] - batch["y"].astype(jnp.float16)
    return jnp.mean(jnp.square(error.astype(jnp.float32))), {"mae": jnp.mean(jnp.abs(error.astype(jnp.float32)))}


CONFIG = TrainConfig(
    steps=8,
    batch_size=16,
    learning_rate=0.01,
    warmup_fraction=0.0,
    schedule="constant",
    log_every=1,
    eval_every=100,
    checkpoint_every=1,
    keep_checkpoints=100,
    seed=1,
    loss_scaling="dynamic",
    loss_scale_period=2,
)
_BATCHES = shuffled_batches(_data(), CONFIG.batch_size, CONFIG.seed)


def _batch(step: int) -> Batch:
    """The shuffled batch; at `OVERFLOW`, targets of 1000, whose gradients times 2**15 exceed float16's 65504."""
    batch = _BATCHES(step)
    return {**batch, "y": np.full_like(batch["y"], 1000.0)} if step == OVERFLOW else batch


TASK = Task(_loss, _batch)
WEIGHTS = jm.make_weights(jr.key(0), SPEC)


@dataclasses.dataclass(frozen=True)
class Run:
    result: TrainResult
    run_dir: Path


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Run:
    run_dir = tmp_path_factory.mktemp("straight")
    return Run(train(TASK, WEIGHTS, CONFIG, run_dir, progress="off"), run_dir)


def _column(history: list[dict[str, float]], name: str) -> list[float]:
    return [entry[name] for entry in history]


def test_an_overflowing_step_is_skipped_and_halves_the_scale(straight: Run) -> None:
    history = straight.result.history
    assert _column(history, "skipped") == [0, 0, 0, 1, 0, 0, 0, 0]
    assert _column(history, "loss_scale")[2:4] == [2.0**16, 2.0**15]
    assert np.isnan(history[OVERFLOW]["grad_norm"]) and np.isfinite(history[OVERFLOW]["loss"])
    assert all(np.isfinite(entry["grad_norm"]) for index, entry in enumerate(history) if index != OVERFLOW)
    saved = json.loads((straight.run_dir / "metrics.json").read_text())["history"]
    assert saved[OVERFLOW]["grad_norm"] is None and saved[OVERFLOW]["skipped"] == 1
    with Checkpoints(straight.run_dir, create=False) as checkpoints:
        before, skipped, after = (
            checkpoints.restore(step, WEIGHTS, straight.result.opt_state) for step in (OVERFLOW, OVERFLOW + 1, 8)
        )
    jax.tree.map(np.testing.assert_array_equal, skipped[0], before[0])  # the weights, bit for bit
    jax.tree.map(np.testing.assert_array_equal, skipped[1].optimizer, before[1].optimizer)  # Adam's moments, count
    assert not np.array_equal(after[0]["w"], before[0]["w"])  # the steps after it train again
    assert (float(before[1].loss_scale.scale), float(skipped[1].loss_scale.scale)) == (2.0**16, 2.0**15)
    jax.tree.map(np.testing.assert_array_equal, load_weights(straight.run_dir, SPEC, step=8), straight.result.weights)


def test_the_scale_doubles_after_period_finite_steps(straight: Run) -> None:
    scales = _column(straight.result.history, "loss_scale")
    assert scales == [2.0**15, 2.0**16, 2.0**16, 2.0**15, 2.0**15, 2.0**16, 2.0**16, 2.0**17]
    state = straight.result.opt_state
    assert isinstance(state, LossScaledState) and isinstance(state.loss_scale, LossScale)
    assert (float(state.loss_scale.scale), int(state.loss_scale.finite_steps)) == (2.0**17, 0)


def test_a_window_averages_skipped_and_keeps_the_last_scale(tmp_path: Path) -> None:
    config = dataclasses.replace(CONFIG, steps=4, log_every=4, checkpoint_every=4)
    (entry,) = train(TASK, WEIGHTS, config, tmp_path, progress="off").history
    assert (entry["skipped"], entry["loss_scale"]) == (0.25, 2.0**15)
    assert np.isfinite(entry["grad_norm"])  # the mean over the 3 steps applied


class _Crash(Exception):
    pass


def test_resume_with_loss_scaling_repeats_the_run_bit_for_bit(straight: Run, tmp_path: Path) -> None:
    def crashing(step: int) -> Batch:
        if step == 5:
            raise _Crash
        return _batch(step)

    with pytest.raises(_Crash):  # after the checkpoint of step 5, one finite step into the period
        train(dataclasses.replace(TASK, batch=crashing), WEIGHTS, CONFIG, tmp_path, progress="off")
    resumed = train(TASK, WEIGHTS, CONFIG, tmp_path, resume=True, progress="off")
    without_timing = [
        [{k: v for k, v in entry.items() if k not in ("time", "steps_per_s")} for entry in run.history]
        for run in (resumed, straight.result)
    ]
    np.testing.assert_equal(without_timing[0], without_timing[1])  # NaN == NaN here
    jax.tree.map(np.testing.assert_array_equal, resumed.weights, straight.result.weights)
    jax.tree.map(np.testing.assert_array_equal, resumed.opt_state, straight.result.opt_state)
    assert str(jax.tree.structure(resumed.opt_state)) == str(jax.tree.structure(straight.result.opt_state))


def test_resuming_with_the_other_loss_scaling_is_refused(straight: Run, tmp_path: Path) -> None:
    none = dataclasses.replace(CONFIG, loss_scaling="none")
    with pytest.raises(jm.ConfigError) as error:
        train(TASK, WEIGHTS, none, straight.run_dir, resume=True, progress="off")
    assert str(error.value) == (
        f"`TrainConfig.loss_scaling`='none' does not match the checkpoint of step 8 in "
        f"`{straight.run_dir.absolute() / 'checkpoints'}`: it was saved with 'dynamic' (its optimizer state holds a "
        "loss scale); resume with `loss_scaling='dynamic'` (float16 models train with 'dynamic', as `jaxmake train "
        "--precision f16` does), or start a new run"
    )
    train(TASK, WEIGHTS, dataclasses.replace(none, steps=1), tmp_path, progress="off")
    with pytest.raises(jm.ConfigError, match=r"saved with 'none' \(its optimizer state holds no loss scale\)"):
        train(TASK, WEIGHTS, CONFIG, tmp_path, resume=True, progress="off")


def _not_finite_at_any_scale(weights: jm.Weights, batch: Batch, rng: Array) -> tuple[Array, dict[str, Array]]:
    """The loss of `_loss`, plus 0 * sqrt(0): its value is finite, its gradient NaN whatever the scale."""
    value, metrics = _loss(weights, batch, rng)
    return value + 0 * jnp.sum(jnp.sqrt(weights["b"] - weights["b"])), metrics


def test_a_scale_below_1_stops_the_run(tmp_path: Path) -> None:
    config = dataclasses.replace(CONFIG, steps=20, log_every=5, checkpoint_every=10)
    with pytest.raises(TrainingDiverged) as error:
        train(dataclasses.replace(TASK, loss=_not_finite_at_any_scale), WEIGHTS, config, tmp_path, progress="off")
    assert (error.value.step, error.value.metric, error.value.value) == (16, "loss_scale", 0.5)  # 2**15 halved 16 times
    assert str(error.value).startswith(
        "training diverged at step 16 of 20: the loss scale fell to 0.5 (below 1), halved at every step whose "
        "gradients were not finite, the latest computed on `task.batch(15)`: they are not finite even unscaled, "
        "which loss scaling cannot fix. Nothing of this step or later was saved; the latest checkpoint is still "
        f"step 10 in `{tmp_path / 'checkpoints'}`"
    )
    jax.tree.map(np.testing.assert_array_equal, load_weights(tmp_path, SPEC), WEIGHTS)  # every step was skipped


def test_a_nan_loss_still_stops_the_run(tmp_path: Path) -> None:
    def batch(step: int) -> Batch:
        clean = _batch(step)
        return {**clean, "x": clean["x"] * np.float32(np.nan)} if step == 1 else clean

    with pytest.raises(TrainingDiverged) as error:
        train(dataclasses.replace(TASK, batch=batch), WEIGHTS, CONFIG, tmp_path, progress="off")
    assert (error.value.step, error.value.metric, np.isnan(error.value.value)) == (2, "loss", True)
    assert str(error.value).startswith("training diverged at step 2 of 8: `loss` is nan (computed on `task.batch(1)`)")
