"""Training a model with state (BatchNorm), and several steps per compiled call."""

import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from jax import Array

import jaxmake as jm
from jaxmake.components import BatchNorm, Linear, softmax_cross_entropy
from jaxmake.sharding import RULES, make_mesh
from jaxmake.training import Batch, Checkpoints, StatefulTask, Task, TrainConfig, shuffled_batches, train


class Net(jm.Config):
    """`[n_in] -> [n_classes]`: BatchNorm, then a linear head (one stateful child)."""

    n_in: int
    n_classes: int

    @classmethod
    def make(cls, config: "Net") -> jm.Component:
        c = jm.make_children(bn=BatchNorm(config.n_in, momentum=0.5), head=Linear(config.n_in, config.n_classes))

        def net(weights: jm.Weights, x: Array, state: jm.Weights, *, train: bool) -> tuple[Array, jm.Weights]:
            y, bn = c.bn.apply(weights, x, state, train=train)
            return c.head(weights, y), {"bn": bn}

        return jm.Component.from_stateful(c.weight_params, c.state_params, net, dims=config, axis_names=c.axis_names)


NET = Net.make(Net(4, 3))
CONFIG = TrainConfig(steps=12, batch_size=16, learning_rate=0.05, eval_every=6, log_every=2, checkpoint_every=4, seed=2)


def _data() -> dict[str, np.ndarray[Any, Any]]:
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(64, 4)).astype(np.float32)
    return {"x": x, "y": (x[:, 0] > 3.0).astype(np.int32) + (x[:, 1] > 3.0).astype(np.int32)}


DATA = _data()


def _loss(weights: jm.Weights, state: jm.Weights, batch: Batch, rng: Array) -> tuple[Array, tuple[Any, jm.Weights]]:
    def one(x: Array) -> tuple[Array, jm.Weights]:
        return NET.apply(weights, x, state, train=True)

    logits, new_state = jax.vmap(one, axis_name="batch", out_axes=(0, None))(batch["x"])
    return softmax_cross_entropy(logits, batch["y"]).mean(), ({}, new_state)


@jax.jit
def _eval_loss(weights: jm.Weights, state: jm.Weights) -> Array:
    logits = jax.vmap(lambda x: NET.apply(weights, x, state, train=False)[0])(DATA["x"])
    return softmax_cross_entropy(logits, jnp.asarray(DATA["y"])).mean()


TASK = StatefulTask(
    _loss,
    shuffled_batches(DATA, CONFIG.batch_size, CONFIG.seed),
    lambda weights, state: {"loss": float(_eval_loss(weights, state))},
)
WEIGHTS = jm.make_weights(jr.key(0), NET.weight_params)
STATE = jm.make_state(NET.state_params)


def _equal(a: Any, b: Any) -> None:
    jax.tree.map(np.testing.assert_array_equal, a, b)


def _without_timing(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in entry.items() if k not in ("time", "steps_per_s")} for entry in history]


class _Crash(Exception):
    pass


def test_state_is_trained_checkpointed_and_resumed_bit_for_bit(tmp_path: Path) -> None:
    config = dataclasses.replace(CONFIG, steps_per_call=3)
    straight = train(TASK, WEIGHTS, config, tmp_path / "straight", state=STATE, progress="off")
    mean = straight.state["bn"]["mean"]
    np.testing.assert_allclose(mean, DATA["x"].mean(axis=0), rtol=0.2)  # momentum 0.5: the running mean has moved
    assert straight.history[-1]["eval_loss"] < 0.8 * float(_eval_loss(WEIGHTS, STATE))
    with Checkpoints(tmp_path / "straight", create=False) as checkpoints:
        _equal(checkpoints.restore_state(12, STATE), straight.state)

    def crashing(step: int) -> Batch:
        if step == 9:
            raise _Crash
        return TASK.batch(step)

    with pytest.raises(_Crash):
        train(dataclasses.replace(TASK, batch=crashing), WEIGHTS, config, tmp_path / "resumed", state=STATE)
    resumed = train(TASK, WEIGHTS, config, tmp_path / "resumed", state=STATE, resume=True, progress="off")
    assert _without_timing(resumed.history) == _without_timing(straight.history)
    _equal(resumed.weights, straight.weights)
    _equal(resumed.opt_state, straight.opt_state)
    _equal(resumed.state, straight.state)


def test_several_steps_per_call_equal_one_step_per_call(tmp_path: Path) -> None:
    runs = [
        train(TASK, WEIGHTS, dataclasses.replace(CONFIG, steps_per_call=n), tmp_path / str(n), state=STATE)
        for n in (1, 5)
    ]
    losses = [[entry["loss"] for entry in run.history] for run in runs]
    assert [entry["step"] for entry in runs[1].history] == [2, 4, 6, 8, 10, 12]  # entries fall on chunk edges
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), runs[1].state, runs[0].state)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), runs[1].weights, runs[0].weights)


def test_data_parallel_batch_statistics_equal_one_device(tmp_path: Path) -> None:
    single = train(TASK, WEIGHTS, CONFIG, tmp_path / "single", state=STATE, progress="off")
    mesh = make_mesh({"data": 4})
    weights = jm.make_weights(jr.key(0), NET.weight_params, mesh=mesh, rules=RULES["dp"])
    sharded = train(TASK, weights, CONFIG, tmp_path / "sharded", state=STATE, progress="off", mesh=mesh)
    np.testing.assert_allclose([e["loss"] for e in sharded.history], [e["loss"] for e in single.history], rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), sharded.state, single.state)


def test_state_goes_with_a_stateful_task_only(tmp_path: Path) -> None:
    with pytest.raises(jm.ArgumentError, match=r"takes `state=` .* with a `StatefulTask`, and only with one$"):
        train(TASK, WEIGHTS, CONFIG, tmp_path / "a")
    plain = Task(lambda w, b, r: (jnp.float32(0.0), {}), TASK.batch)
    with pytest.raises(jm.ArgumentError, match=r"given a state holding \['bn'\] with a `Task`"):
        train(plain, WEIGHTS, CONFIG, tmp_path / "b", state=STATE)


def test_resuming_with_another_state_lists_the_difference(tmp_path: Path) -> None:
    config = dataclasses.replace(CONFIG, steps=4)
    train(TASK, WEIGHTS, config, tmp_path, state=STATE, progress="off")
    other = {"bn": {"mean": jnp.zeros(5), "var": jnp.ones(4)}}
    with pytest.raises(jm.WeightsError, match=r"(?s)the state in the checkpoint of step 4 .*wrong shape +bn\.mean"):
        train(TASK, WEIGHTS, dataclasses.replace(config, steps=8), tmp_path, state=other, resume=True)
