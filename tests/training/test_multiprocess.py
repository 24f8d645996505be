"""`train` with several processes: it needs a mesh and a shared run folder (`check_shared`).

The collectives are faked here; the real two-process runs are in tests/cli/test_scale.py.
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt
import pytest
from jax import Array
from jax.experimental import multihost_utils

import jaxmake as jm
from jaxmake.sharding import make_mesh
from jaxmake.training import Batch, RunDirNotShared, Task, TrainConfig, check_shared, shuffled_batches, train


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


def _as_process(monkeypatch: pytest.MonkeyPatch, index: int, seen: list[bool] | None) -> None:
    """Make this process look like process `index` of `len(seen)`; process `i` reads process 0's file iff `seen[i]`.

    The collectives are faked: the broadcast keeps this process's value, the barrier does
    nothing, the gather answers `seen` (with this process's own answer at `index`). With
    `seen=None`, the gather raises (to show that it is never reached).
    """
    count = 2 if seen is None else len(seen)
    monkeypatch.setattr(jax, "process_count", lambda: count)
    monkeypatch.setattr(jax, "process_index", lambda: index)
    monkeypatch.setattr(multihost_utils, "broadcast_one_to_all", lambda tree: tree)
    monkeypatch.setattr(multihost_utils, "sync_global_devices", lambda name: None)

    def gather(own: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
        assert seen is not None, "the check was not expected to run"
        return np.array([bool(own) if i == index else value for i, value in enumerate(seen)])

    monkeypatch.setattr(multihost_utils, "process_allgather", gather)


def test_a_shared_run_folder_passes_and_keeps_no_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _as_process(monkeypatch, 0, [True, True, True])
    check_shared(tmp_path / "run")
    assert list((tmp_path / "run").iterdir()) == []  # created, and the token removed


def test_a_run_folder_that_a_process_cannot_see_is_refused_on_every_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for index in (0, 2):  # process 0 wrote the token and sees it; process 2 does not see it
        _as_process(monkeypatch, index, [True, True, False])
        with pytest.raises(RunDirNotShared) as raised:
            check_shared(tmp_path / "run")
        assert str(raised.value) == (
            f"the run folder `{tmp_path / 'run'}` is not one folder shared by all 3 processes: process 2 does not "
            "see the file that process 0 wrote in it. With several processes, give all of them the same run folder, "
            "on a file system that every process sees (e.g. a network file system)"
        )
        assert raised.value.unseen == (2,) and raised.value.run_dir == tmp_path / "run"
        assert not (tmp_path / "run").exists()  # process 0 removed the folder it had created
    _as_process(monkeypatch, 0, [True, False, False])
    with pytest.raises(RunDirNotShared, match=r"all 3 processes: processes 1, 2 do not see the file that process 0"):
        check_shared(tmp_path / "run")


def test_a_run_folder_that_process_0_cannot_write_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "file").write_text("")
    _as_process(monkeypatch, 0, [True, False])  # process 0 itself reads no file
    with pytest.raises(RunDirNotShared) as raised:
        check_shared(tmp_path / "file" / "run")
    assert str(raised.value).startswith(
        f"the run folder `{tmp_path / 'file' / 'run'}` cannot be checked to be one folder shared by all 2 processes: "
        "process 0 could not write a file in it (NotADirectoryError: Not a directory). With several processes"
    )
    assert raised.value.unseen == (0, 1)
    assert issubclass(RunDirNotShared, jm.JaxMakeError) and issubclass(RunDirNotShared, OSError)


def test_train_checks_the_run_folder_before_anything_else(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    task = Task(_loss, shuffled_batches({"x": np.ones((8, 2), np.float32)}, 4, 0))
    mesh = make_mesh({"data": 4})
    weights = jm.make_weights(jax.random.key(0), {"w": jm.WeightParams((2, 1))})
    (tmp_path / "run").mkdir()  # e.g. the folder of a process on another host, empty there
    _as_process(monkeypatch, 1, [True, False])
    with pytest.raises(RunDirNotShared, match=r"process 1 does not see the file that process 0 wrote in it"):
        train(task, weights, TrainConfig(steps=1), tmp_path / "run", progress="off", mesh=mesh)
    assert list((tmp_path / "run").iterdir()) == []


def test_one_process_needs_no_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _as_process(monkeypatch, 0, None)
    monkeypatch.setattr(jax, "process_count", lambda: 1)
    check_shared(tmp_path / "run")
    assert not (tmp_path / "run").exists()
