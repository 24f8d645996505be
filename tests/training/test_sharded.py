"""`train` on a device mesh (4 fake CPU devices): data parallel batches, sharded weights
and optimizer state, and checkpoints restored onto another layout."""

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import Array
from jax.sharding import Mesh

import jaxmake as jm
from jaxmake.sharding import make_mesh
from jaxmake.training import Batch, LossScaledState, Task, TrainConfig, load_weights, shuffled_batches, train

SPEC = {"w": jm.WeightParams((4, 2), axes=("embed", "mlp")), "b": jm.WeightParams((2,), init="zeros", axes=("mlp",))}
RULES: jm.Rules = {"embed": "data", "mlp": "model"}  # FSDP and tensor parallel at once
CONFIG = TrainConfig(steps=6, batch_size=8, learning_rate=0.1, eval_every=6, log_every=2, checkpoint_every=3, seed=1)
rng = np.random.default_rng(0)
DATA = {"x": rng.normal(size=(32, 4)).astype(np.float32), "y": rng.normal(size=(32, 2)).astype(np.float32)}


def _loss(weights: jm.Weights, batch: Batch, key: Array) -> tuple[Array, dict[str, Array]]:
    w: Array = weights["w"]
    b: Array = weights["b"]
    return jnp.mean(jnp.square(batch["x"] @ w + b - batch["y"])), {}


TASK = Task(_loss, shuffled_batches(DATA, CONFIG.batch_size, CONFIG.seed))


def _mesh(shape: tuple[int, int]) -> Mesh:
    return make_mesh({"data": shape[0], "model": shape[1]})


def test_sharded_training_matches_one_device_and_restores_onto_other_layouts(tmp_path: Path) -> None:
    key = jax.random.key(0)
    single = train(TASK, jm.make_weights(key, SPEC), CONFIG, tmp_path / "single", progress="off")
    mesh = _mesh((2, 2))
    weights = jm.make_weights(key, SPEC, mesh=mesh, rules=RULES)
    sharded = train(TASK, weights, CONFIG, tmp_path / "sharded", progress="off", mesh=mesh)
    np.testing.assert_allclose([e["loss"] for e in sharded.history], [e["loss"] for e in single.history], rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), sharded.weights, single.weights)
    assert sharded.weights["w"].sharding.spec == jax.sharding.PartitionSpec("data", "model")
    moments = [leaf for leaf in jax.tree.leaves(sharded.opt_state) if leaf.shape == (4, 2)]
    assert moments and all(leaf.sharding.spec == jax.sharding.PartitionSpec("data", "model") for leaf in moments)

    other = jm.make_weights(key, SPEC, mesh=_mesh((4, 1)), rules=RULES)  # restore on an 4x1 mesh
    restored = load_weights(tmp_path / "sharded", SPEC)
    onto_other = train(TASK, other, CONFIG, tmp_path / "sharded", resume=True, progress="off", mesh=_mesh((4, 1)))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), onto_other.weights, sharded.weights)
    assert onto_other.weights["w"].sharding.mesh.shape == {"data": 4, "model": 1}
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), restored, sharded.weights)


def test_loss_scaling_on_a_mesh_matches_one_device_and_restores_onto_another(tmp_path: Path) -> None:
    config = dataclasses.replace(CONFIG, loss_scaling="dynamic", loss_scale_period=2)
    key = jax.random.key(0)
    single = train(TASK, jm.make_weights(key, SPEC), config, tmp_path / "single", progress="off")
    mesh = _mesh((2, 2))
    weights = jm.make_weights(key, SPEC, mesh=mesh, rules=RULES)
    sharded = train(TASK, weights, config, tmp_path / "sharded", progress="off", mesh=mesh)
    scales = [[entry["loss_scale"] for entry in run.history] for run in (single, sharded)]
    assert scales == [[2.0**16, 2.0**16, 2.0**17, 2.0**18]] * 2  # doubled every 2 steps; entries at 2, 3, 4, 6
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), sharded.weights, single.weights)
    other = jm.make_weights(key, SPEC, mesh=_mesh((4, 1)), rules=RULES)
    onto_other = train(TASK, other, config, tmp_path / "sharded", resume=True, progress="off", mesh=_mesh((4, 1)))
    assert isinstance(onto_other.opt_state, LossScaledState)
    jax.tree.map(np.testing.assert_array_equal, onto_other.opt_state.loss_scale, sharded.opt_state.loss_scale)


def test_batches_that_do_not_split_are_one_line_errors(tmp_path: Path) -> None:
    odd = TrainConfig(steps=1, batch_size=6, eval_every=1, log_every=1, checkpoint_every=1)
    task = Task(_loss, shuffled_batches(DATA, odd.batch_size, 0))
    mesh = _mesh((4, 1))
    with pytest.raises(
        jm.ShardingError, match=r"^a batch of 6 examples cannot be split over mesh axis 'data' of size 4$"
    ):
        train(task, jm.make_weights(jax.random.key(0), SPEC), odd, tmp_path, progress="off", mesh=mesh)
    with pytest.raises(jm.ShardingError, match=r"the mesh has no axis 'batch' to split batches over"):
        train(
            task,
            jm.make_weights(jax.random.key(0), SPEC),
            odd,
            tmp_path / "x",
            progress="off",
            mesh=mesh,
            data_axis="batch",
        )
