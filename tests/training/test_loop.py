"""`train` on a tiny linear regression: learning, history, checkpoints, exact resume, NaN stop, logs.

One uninterrupted run (`straight`) is made once for the module; the other tests compare
against it. Every `train` call compiles its step once (~0.3 s here), so there are few.
"""

import contextlib
import dataclasses
import io
import json
import re
import shutil
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
    RunDirError,
    Task,
    TrainConfig,
    TrainingDiverged,
    TrainResult,
    load_metadata,
    load_weights,
    shuffled_batches,
    train,
)

SPEC = {"linear": {"w": jm.WeightParams((3, 1)), "b": jm.WeightParams((1,), init="zeros")}, "dropout": {}}
CONFIG = TrainConfig(
    steps=12,
    batch_size=16,
    learning_rate=0.3,
    eval_every=6,
    log_every=1,
    checkpoint_every=4,
    keep_checkpoints=2,
    seed=3,
)

CONFIG_JSON = json.loads(json.dumps(dataclasses.asdict(CONFIG)))
"""`CONFIG` as `config.json` holds it (tuples as lists)."""


def _structure(tree: object) -> str:
    """The tree structure as text (`PyTreeDef` equality is untyped)."""
    return str(jax.tree.structure(tree))


def _data() -> dict[str, np.ndarray[Any, Any]]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype(np.float32)
    y = x @ np.array([[1.0], [-2.0], [0.5]], np.float32) + 0.3 + 0.05 * rng.normal(size=(64, 1)).astype(np.float32)
    return {"x": x, "y": y}


DATA = _data()


def _loss(weights: jm.Weights, batch: Batch, rng: Array) -> tuple[Array, dict[str, Array]]:
    """Mean squared error of a linear model whose predictions get a little noise from `rng`."""
    prediction = batch["x"] @ weights["linear"]["w"] + weights["linear"]["b"]
    error = prediction + 0.01 * jr.normal(rng, prediction.shape) - batch["y"]
    return jnp.mean(error**2), {"mae": jnp.mean(jnp.abs(error))}


@jax.jit
def _mse(weights: jm.Weights) -> Array:
    prediction = DATA["x"] @ weights["linear"]["w"] + weights["linear"]["b"]
    return jnp.mean((prediction - DATA["y"]) ** 2)


def _evaluate(weights: jm.Weights) -> dict[str, float]:
    return {"mse": float(_mse(weights))}


TASK = Task(_loss, shuffled_batches(DATA, CONFIG.batch_size, CONFIG.seed), _evaluate)
WEIGHTS = jm.make_weights(jr.key(0), SPEC)


@dataclasses.dataclass(frozen=True)
class Run:
    result: TrainResult
    run_dir: Path
    stdout: str


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The uninterrupted run, with the default progress (stdout is not a terminal here)."""
    run_dir = tmp_path_factory.mktemp("straight")
    with contextlib.redirect_stdout(io.StringIO()) as stdout:
        result = train(TASK, WEIGHTS, CONFIG, run_dir, metadata={"model": {"n_in": 3}, "config": CONFIG})
    return Run(result, run_dir, stdout.getvalue())


def _without_timing(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in entry.items() if k not in ("time", "steps_per_s")} for entry in history]


def test_the_loss_falls(straight: Run) -> None:
    history = straight.result.history
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    assert history[-1]["eval_mse"] < 0.5 * _evaluate(WEIGHTS)["mse"]


def test_the_caller_weights_are_left_alone(straight: Run) -> None:
    jax.tree.map(np.testing.assert_array_equal, WEIGHTS, jm.make_weights(jr.key(0), SPEC))  # not donated


def test_metrics_json_holds_the_history(straight: Run) -> None:
    content = json.loads((straight.run_dir / "metrics.json").read_text())
    saved = content["history"]
    assert saved == straight.result.history
    assert content["results"] == {"step": 12, "loss": saved[-1]["loss"], "mse": saved[-1]["eval_mse"]}
    assert [entry["step"] for entry in saved] == list(range(1, 13))
    assert {"step", "loss", "lr", "grad_norm", "mae", "steps_per_s", "time"} == set(saved[0])
    assert set(saved[5]) == set(saved[0]) | {"eval_mse"} and "eval_mse" in saved[11]
    times = [entry["time"] for entry in saved]
    assert times == sorted(times) and all(entry["steps_per_s"] > 0 for entry in saved)
    assert saved[0]["lr"] == 0.0 and saved[1]["lr"] == pytest.approx(0.3)  # one warmup step
    assert saved[-1]["lr"] == pytest.approx(0.3 * (1 + np.cos(np.pi * 10 / 11)) / 2, rel=1e-5)


def test_config_json_holds_the_config_and_metadata(straight: Run) -> None:
    saved = json.loads((straight.run_dir / "config.json").read_text())
    assert saved["train"] == CONFIG_JSON
    assert load_metadata(straight.run_dir) == {"model": {"n_in": 3}, "config": CONFIG_JSON}


def test_the_latest_checkpoints_are_kept(straight: Run) -> None:
    with Checkpoints(straight.run_dir, create=False) as checkpoints:
        assert checkpoints.steps() == [8, 12]  # saved at 4, 8, 12; keep 2
    jax.tree.map(np.testing.assert_array_equal, load_weights(straight.run_dir, SPEC), straight.result.weights)


def test_lines_are_printed_when_stdout_is_not_a_terminal(straight: Run) -> None:
    lines = straight.stdout.splitlines()
    assert len(lines) == 12
    pattern = r"step (\d+)/12  loss \d+\.\d{4}  lr \d\.\de[-+]\d\d  \d+\.\d steps/s  mae \S+"
    for index, line in enumerate(lines, start=1):
        match = re.fullmatch(pattern + ("  eval_mse \\S+" if index in (6, 12) else ""), line)
        assert match is not None, line
        assert int(match.group(1)) == index


class _Crash(Exception):
    pass


def _crashing_batches(at: int) -> Task:
    def batch(step: int) -> Batch:
        if step == at:
            raise _Crash
        return TASK.batch(step)

    return dataclasses.replace(TASK, batch=batch)


def test_resume_repeats_the_uninterrupted_run_bit_for_bit(straight: Run, tmp_path: Path) -> None:
    with pytest.raises(_Crash):  # dies before step 10, after the checkpoint of step 8
        train(_crashing_batches(9), WEIGHTS, CONFIG, tmp_path, progress="off")
    before = json.loads((tmp_path / "metrics.json").read_text())["history"]
    assert [entry["step"] for entry in before] == list(range(1, 10))
    asked: list[int] = []

    def batch(step: int) -> Batch:
        asked.append(step)
        return TASK.batch(step)

    resumed = train(dataclasses.replace(TASK, batch=batch), WEIGHTS, CONFIG, tmp_path, resume=True, progress="off")
    assert asked == [8, 9, 10, 11]  # from the checkpoint of step 8, not from scratch
    assert resumed.history[:8] == before[:8]  # read back; the entry of step 9 is made again
    assert _without_timing(resumed.history) == _without_timing(straight.result.history)
    jax.tree.map(np.testing.assert_array_equal, resumed.weights, straight.result.weights)
    jax.tree.map(np.testing.assert_array_equal, resumed.opt_state, straight.result.opt_state)
    assert _structure(resumed.opt_state) == _structure(straight.result.opt_state)


def test_resuming_a_finished_run_changes_nothing(straight: Run, tmp_path: Path) -> None:
    again = train(TASK, WEIGHTS, CONFIG, straight.run_dir, resume=True, progress="off")
    assert again.history == straight.result.history
    jax.tree.map(np.testing.assert_array_equal, again.weights, straight.result.weights)


def test_a_fresh_run_refuses_a_used_run_dir(straight: Run) -> None:
    with pytest.raises(FileExistsError, match=r"already holds checkpoints of steps \[8, 12\]; pass `resume=True`"):
        train(TASK, WEIGHTS, CONFIG, straight.run_dir, progress="off")


def test_resuming_into_other_weights_lists_every_difference(straight: Run) -> None:
    other = {"linear": {"w": jnp.zeros((4, 1))}, "dropout": {}, "head": {"w": jnp.zeros((1, 1))}}
    with pytest.raises(jm.WeightsError) as error:
        train(TASK, other, CONFIG, straight.run_dir, resume=True, progress="off")
    message = str(error.value)
    assert message.startswith("the checkpoint of step 12 in ")
    assert "does not match the weights given to `train`" in message
    for line in [
        "wrong shape  linear.w: expected f32[4,1], got f32[3,1]",
        "missing      head: expected a dict with keys ['w']",
        "extra        linear.b: f32[1]",
    ]:
        assert f"\n  {line}" in message
    assert json.loads((straight.run_dir / "config.json").read_text())["train"] == CONFIG_JSON


def test_a_nan_loss_stops_the_run_before_saving_it(tmp_path: Path) -> None:
    def batch(step: int) -> Batch:
        clean = TASK.batch(step)
        return {**clean, "x": clean["x"] * np.float32(np.nan)} if step >= 5 else clean

    config = dataclasses.replace(CONFIG, log_every=4, checkpoint_every=4, eval_every=100)
    with pytest.raises(TrainingDiverged) as error:
        train(dataclasses.replace(TASK, batch=batch), WEIGHTS, config, tmp_path, progress="off")
    assert (error.value.step, error.value.metric, np.isnan(error.value.value)) == (6, "loss", True)
    assert isinstance(error.value, jm.JaxMakeError)
    assert str(error.value).startswith(
        "training diverged at step 6 of 12: `loss` is nan (computed on `task.batch(5)`). Nothing of this step or "
        f"later was saved; the latest checkpoint is still step 4 in `{tmp_path / 'checkpoints'}`"
    )
    with Checkpoints(tmp_path, create=False) as checkpoints:
        assert checkpoints.steps() == [4]
    assert [entry["step"] for entry in json.loads((tmp_path / "metrics.json").read_text())["history"]] == [4]
    assert np.isfinite(np.asarray(load_weights(tmp_path, SPEC)["linear"]["w"])).all()


def test_metadata_must_be_json(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"^`metadata` must hold JSON values or dataclasses to write `config.json`: "):
        train(TASK, WEIGHTS, CONFIG, tmp_path, metadata={"model": object()})


def test_a_metric_may_not_shadow_a_history_key(tmp_path: Path) -> None:
    def loss(weights: jm.Weights, batch: Batch, rng: Array) -> tuple[Array, dict[str, Array]]:
        value, _ = _loss(weights, batch, rng)
        return value, {"lr": value}

    with pytest.raises(ValueError, match=r"^the task's metrics may not be named \['lr'\]"):
        train(dataclasses.replace(TASK, loss=loss), WEIGHTS, CONFIG, tmp_path, progress="off")


def test_a_metric_must_be_a_scalar(tmp_path: Path) -> None:
    def loss(weights: jm.Weights, batch: Batch, rng: Array) -> tuple[Array, dict[str, Array]]:
        value, _ = _loss(weights, batch, rng)
        return value, {"errors": batch["y"][:, 0]}

    with pytest.raises(ValueError, match=r"^the task's metric `errors` must be a scalar, got shape \(16,\)"):
        train(dataclasses.replace(TASK, loss=loss), WEIGHTS, CONFIG, tmp_path, progress="off")


def test_resuming_with_a_damaged_history_names_the_file(straight: Run, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(straight.run_dir, run_dir)
    (run_dir / "metrics.json").write_text('{"history": [1, 2]}')
    with pytest.raises(RunDirError, match=r"metrics.json` is damaged: its 'history' is not a list of entries; delete"):
        train(TASK, WEIGHTS, CONFIG, run_dir, resume=True, progress="off")
