"""Training, sharded init and checkpoints on 8 fake CPU devices (issue 6).

XLA fixes the device count when JAX starts and this session has 4, so `_eight_devices.py`
runs everything once, in a subprocess of its own, and writes what it saw (see its
docstring); these tests assert on that.
"""

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

HELPER = Path(__file__).with_name("_eight_devices.py")
LAYOUTS = {"dp": set(), "fsdp": {"data"}, "tp": {"model"}, "fsdp_tp": {"data", "model"}}
"""Each layout of the helper, and the mesh axes its rules split some weight over."""
CASES = [f"{model}/{layout}" for model in ("gpt", "vit") for layout in LAYOUTS]
RTOL = ATOL = 1e-5
"""float32: the layouts sum in other orders, so results differ by a few ulps per step."""


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eight_devices")
    done = subprocess.run([sys.executable, str(HELPER), str(out)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{HELPER.name} exited with status {done.returncode}:\n{done.stderr[-6000:]}"
    return out


@pytest.fixture(scope="module")
def results(runs: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((runs / "results.json").read_text())
    return loaded


def load(runs: Path, name: str) -> dict[str, np.ndarray[Any, Any]]:
    with np.load(runs / f"{name}.npz") as arrays:
        return dict(arrays)


def without_key_bias(path: str, array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """`array`, less the key block of an attention's `kqv.b` (`[q | k | v]`, `3 * dim_model`).

    Adding a constant to every key adds `q . c` to all of a query's scores, which the
    softmax ignores: that block's gradient is exactly 0, and the computed one is rounding
    noise of either sign, which Adam's first steps scale up to about the learning rate.
    Its values differ between any two summation orders, and nothing depends on them.
    """
    if not path.endswith("mha.kqv.b"):
        return array
    q, _, v = np.split(array, 3, axis=-1)
    return np.concatenate([q, v], axis=-1)


def entry_axes(entry: str | list[str] | None) -> list[str]:
    """The mesh axes of one dim's entry in a partition spec as JSON."""
    return [entry] if isinstance(entry, str) else entry or []


def split_axes(specs: dict[str, list[Any]]) -> set[str]:
    """The mesh axes that some partition spec of `specs` splits a dim over."""
    return {axis for spec in specs.values() for entry in spec for axis in entry_axes(entry)}


@pytest.mark.parametrize("case", CASES)
def test_sharded_training_matches_one_device(case: str, runs: Path, results: dict[str, Any]) -> None:
    run, (model, layout) = results["training"][case], case.split("/")
    assert len(run["losses"]) == 3
    np.testing.assert_allclose(run["losses"], run["single_losses"], rtol=RTOL, atol=ATOL)
    sharded, single = load(runs, f"{model}.{layout}"), load(runs, f"{model}.single")
    assert sharded.keys() == single.keys()
    for path, expected in single.items():
        seen, expected = without_key_bias(path, sharded[path]), without_key_bias(path, expected)
        np.testing.assert_allclose(seen, expected, rtol=RTOL, atol=ATOL, err_msg=f"{case}: {path}")
    assert run["specs"] == run["expected_specs"], "the trained weights left the layout of the rules"
    assert split_axes(run["specs"]) == LAYOUTS[layout]


def test_sharded_init_holds_only_shards_and_equals_the_unsharded_init(results: dict[str, Any]) -> None:
    mesh = {"data": 4, "model": 2}
    for path, weight in results["init"].items():
        assert weight["spec"] == weight["expected_spec"], path
        parts = [math.prod(mesh[axis] for axis in entry_axes(entry)) for entry in weight["spec"]]
        assert weight["shard_shapes"] == [[size // n for size, n in zip(weight["shape"], parts)]] * 8, path
        assert weight["bit_equal"], f"{path}: the sharded init differs from the unsharded one"
    assert results["init"]["encoder.tfe_layer_0.mha.kqv.w"]["shard_shapes"][0] == [16 // 4, 48 // 2]


@pytest.mark.parametrize("target", ["8x1", "single"])
def test_a_4x2_checkpoint_restores_onto_other_layouts(target: str, runs: Path, results: dict[str, Any]) -> None:
    restored = results["restore"][target]
    assert restored["device_sets"] == ([8] if target == "8x1" else [1])
    if target == "8x1":
        assert restored["specs"] == restored["expected_specs"]
    for saved, name in (("gpt.fsdp_tp", f"restore.{target}"), ("gpt.fsdp_tp_opt", f"restore.{target}_opt")):
        expected, seen = load(runs, saved), load(runs, name)
        assert seen.keys() == expected.keys()
        for path in expected:
            np.testing.assert_array_equal(seen[path], expected[path], err_msg=f"{name}: {path}")


def test_load_weights_reads_a_4x2_checkpoint(runs: Path) -> None:
    expected, loaded = load(runs, "gpt.fsdp_tp"), load(runs, "restore.loaded")
    assert loaded.keys() == expected.keys()
    for path in expected:
        np.testing.assert_array_equal(loaded[path], expected[path], err_msg=path)
