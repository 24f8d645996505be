"""`train` with several processes needs a mesh; the real two-process runs are in tests/cli/test_scale.py."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import Array

import jaxmake as jm
from jaxmake.training import Batch, Task, TrainConfig, shuffled_batches, train


def _loss(weights: jm.Weights, batch: Batch, key: Array) -> tuple[Array, dict[str, Array]]:
    w: Array = weights["w"]
    return jnp.mean(jnp.square(batch["x"] @ w)), {}


def test_several_processes_without_a_mesh_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    task = Task(_loss, shuffled_batches({"x": np.ones((8, 2), np.float32)}, 4, 0))
    weights = jm.make_weights(jax.random.key(0), {"w": jm.WeightParams((2, 1))})
    with pytest.raises(ValueError, match=r"^training on 2 processes needs a `mesh` over the devices of all of them"):
        train(task, weights, TrainConfig(steps=1), tmp_path / "run", progress="off")
    assert not (tmp_path / "run").exists()
