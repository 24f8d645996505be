"""`Checkpoints` and `load_weights`: keep-N, exact round trips, and mismatches named path by path."""

import json
import re
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmake as jm
from jaxmake.training import CheckpointDamaged, Checkpoints, RunDirError, load_metadata, load_weights

SPEC = {"linear": {"w": jm.WeightParams((3, 2)), "b": jm.WeightParams((2,), init="zeros")}, "dropout": {}}


def _structure(tree: object) -> str:
    """The tree structure as text (`PyTreeDef` equality is untyped)."""
    return str(jax.tree.structure(tree))


def _weights(value: float) -> jm.Weights:
    return {"linear": {"w": jnp.full((3, 2), value), "b": jnp.full((2,), -value)}, "dropout": {}}


def test_keeps_the_latest_n_and_round_trips_exactly(tmp_path: Path) -> None:
    opt_state = ({"count": jnp.asarray(0, jnp.int32)}, {"mu": _weights(0.5)})
    with Checkpoints(tmp_path, keep=2) as checkpoints:
        for step in (1, 2, 3, 4, 5):
            checkpoints.save(step, _weights(step / 3), opt_state)
        checkpoints.wait()
        assert checkpoints.steps() == [4, 5]
        assert checkpoints.latest_step() == 5
        weights, restored_state = checkpoints.restore(4, jm.abstract_weights(SPEC), opt_state)
    assert _structure(weights) == _structure(_weights(0.0))  # the empty dict stays
    jax.tree.map(np.testing.assert_array_equal, weights, _weights(4 / 3))
    assert _structure(restored_state) == _structure(opt_state)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == ["4", "5"]


def test_load_weights_reads_the_latest_or_a_given_step(tmp_path: Path) -> None:
    with Checkpoints(tmp_path, keep=3) as checkpoints:
        checkpoints.save(10, _weights(1.0), {"count": jnp.asarray(10)})
        checkpoints.save(20, _weights(2.0), {"count": jnp.asarray(20)})
    jax.tree.map(np.testing.assert_array_equal, load_weights(tmp_path, SPEC), _weights(2.0))
    jax.tree.map(np.testing.assert_array_equal, load_weights(tmp_path, SPEC, step=10), _weights(1.0))
    with pytest.raises(FileNotFoundError, match=r"has no checkpoint of step 15; its steps: 10, 20$"):
        load_weights(tmp_path, SPEC, step=15)


def test_a_relative_run_dir_works(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with Checkpoints("runs/a") as checkpoints:
        checkpoints.save(1, _weights(1.0), {"count": jnp.asarray(1)})
    jax.tree.map(np.testing.assert_array_equal, load_weights("runs/a", SPEC), _weights(1.0))


def test_load_weights_without_checkpoints_says_so(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no checkpoints in `.*`: `.*checkpoints` does not exist$"):
        load_weights(tmp_path, SPEC)
    assert not (tmp_path / "checkpoints").exists()  # looking created nothing


def test_a_mismatched_spec_lists_every_path(tmp_path: Path) -> None:
    with Checkpoints(tmp_path) as checkpoints:
        with pytest.raises(ValueError, match=r"^cannot checkpoint step 7: `opt_state` holds no array$"):
            checkpoints.save(7, _weights(1.0), {"empty": {}})
        checkpoints.save(7, _weights(1.0), {"count": jnp.asarray(7)})
    other = {
        "linear": {"w": jm.WeightParams((4, 2)), "b": jm.WeightParams((2,), dtype=jnp.int32, init="zeros")},
        "head": {"w": jm.WeightParams((2, 2))},
    }
    with pytest.raises(jm.WeightsError) as error:
        load_weights(tmp_path, other)
    message = str(error.value)
    assert message.startswith(
        f"the checkpoint of step 7 in `{tmp_path / 'checkpoints'}` does not match the weight spec ("
    )
    for line in [
        "wrong shape  linear.w: expected f32[4,2], got f32[3,2]",
        "wrong dtype  linear.b: expected i32[2], got f32[2]",
        "missing      head: expected a dict with keys ['w']",
        "extra        dropout: an empty dict",
    ]:
        assert f"\n  {line}" in message


def test_load_metadata_reads_config_json(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"train": {}, "metadata": {"model": {"n": 3}}}))
    assert load_metadata(tmp_path) == {"model": {"n": 3}}


def _saved(run_dir: Path, steps: tuple[int, ...] = (1, 2, 3)) -> Path:
    with Checkpoints(run_dir, keep=3) as checkpoints:
        for step in steps:
            checkpoints.save(step, _weights(float(step)), {"count": jnp.zeros(())})
    return run_dir / "checkpoints"


def test_every_saved_checkpoint_is_sealed_with_its_files(tmp_path: Path) -> None:
    folder = _saved(tmp_path)
    for step in ("1", "2", "3"):
        files = json.loads((folder / step / "jaxmake_files.json").read_text())["files"]
        assert "weights/_METADATA" in files and all(isinstance(size, int) for size, _ in files.values())
    assert Checkpoints(tmp_path).damage(3) is None


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda step: (step / "weights" / "_METADATA").write_text("{}"), "weights/_METADATA` holds 2 bytes where"),
        (lambda step: (step / "weights" / "_METADATA").unlink(), "weights/_METADATA` is missing"),
        (lambda step: (step / "jaxmake_files.json").write_text("[]"), "its list of files `"),
    ],
)
def test_a_damaged_checkpoint_is_named_and_skipped(tmp_path: Path, damage: Any, problem: str) -> None:
    folder = _saved(tmp_path)
    damage(folder / "3")
    with pytest.raises(CheckpointDamaged, match=r"^the checkpoint of step 3 is damaged: ") as info:
        load_weights(tmp_path, SPEC, step=3)
    assert problem in str(info.value) and info.value.step == 3
    assert str(info.value).endswith(
        f"; delete or move `{folder.absolute() / '3'}` to use the previous checkpoint (step 2)"
    )
    with pytest.warns(UserWarning, match=r"the checkpoint of step 3 is damaged: .*; reading step 2 instead$"):
        jax.tree.map(np.testing.assert_array_equal, load_weights(tmp_path, SPEC), _weights(2.0))


def test_orbax_failures_on_an_unsealed_checkpoint_are_damage_too(tmp_path: Path) -> None:
    folder = _saved(tmp_path, (1,))
    (folder / "1" / "jaxmake_files.json").unlink()  # as a run killed before sealing would leave it
    (folder / "1" / "weights" / "_METADATA").write_text("not json")
    with pytest.raises(CheckpointDamaged, match=r"step 1 is damaged: orbax cannot read it: .*no earlier checkpoint"):
        load_weights(tmp_path, SPEC)


def test_resuming_from_a_damaged_checkpoint_says_what_to_move(tmp_path: Path) -> None:
    folder = _saved(tmp_path)
    (folder / "3" / "weights" / "_METADATA").write_text("{}")
    with (
        Checkpoints(tmp_path) as checkpoints,
        pytest.raises(CheckpointDamaged, match=r"to use the previous checkpoint"),
    ):
        checkpoints.check(3, SPEC, "the weights given to `train`")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "config.json` is damaged (Expecting value: line 1 column 1 (char 0))"),
        (b"\xff", "config.json` is damaged ('utf-8' codec can't decode byte 0xff"),
        (b"[]", "config.json` is damaged: it is not a JSON object with 'metadata'"),
        (b'{"metadata": 3}', "config.json` is damaged: its 'metadata' is not a table"),
        (b"[" * 100_000, "config.json` is damaged (maximum recursion depth exceeded"),
    ],
)
def test_a_damaged_config_json_is_named(tmp_path: Path, content: bytes, message: str) -> None:
    (tmp_path / "config.json").write_bytes(content)
    with pytest.raises(RunDirError, match=re.escape(message)):
        load_metadata(tmp_path)


def test_a_missing_config_json_is_named(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match=r"holds no config.json: is it a run folder"):
        load_metadata(tmp_path)
