"""Structural facts behind `benchmarks/compare.py`, `sharding_step.py` and `gpu_step.py`; no timings.

The jaxmake train steps must compile to the same program as hand-written JAX, up to stated
differences, and every implementation must have the same parameters; sharding must cut the
bytes each device holds.
"""

import json
import math
import os
import re
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import jax
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import _models
import gpu_step

SPEC = _models.Spec(n_layers=1)
"""One layer keeps each compile short; the per-layer program is what the test compares."""


def compiled_ops(built: _models.Built) -> Counter[str]:
    """The opcodes of the optimized HLO of a train step (every computation, fusions' bodies included)."""
    tokens, targets = _models.batch(SPEC)
    with jax.numpy_dtype_promotion("standard"):  # optax mixes int32 counts with Python floats
        text = built.step.lower(built.state, tokens, targets).compile().as_text()  # type: ignore[attr-defined]
    return Counter(re.findall(r"= \S+ ([a-z][\w-]*)\(", text))


@pytest.fixture(scope="module")
def builds() -> dict[str, _models.Built]:
    return {name: builder(SPEC, False) for name, builder in _models.BUILDERS.items()}


@pytest.fixture(scope="module")
def ops(builds: dict[str, _models.Built]) -> dict[str, Counter[str]]:
    return {name: compiled_ops(built) for name, built in builds.items()}


def test_parameter_counts_are_equal(builds: dict[str, _models.Built]) -> None:
    expected = SPEC.n_params()
    for name, built in builds.items():
        assert built.n_params == expected, name
        assert jax.tree.reduce(lambda n, a: n + a.size, built.fwd_state, 0) == expected, name
    assert _models.Spec().n_params() == 867_328


def test_jaxmake_core_compiles_to_the_hand_written_program(ops: dict[str, Counter[str]]) -> None:
    """The same model written with jaxmake's core: the same matmuls, and the same ops up to 1%.

    The only difference is the order of the weights (jaxmake sorts its dict keys; the
    optimizer's flat state follows), which moves a copy or two.
    """
    core, hand = ops["jaxmake core"], ops[_models.BASELINE]
    assert core["dot"] == hand["dot"]
    assert core["fusion"] == pytest.approx(hand["fusion"], rel=0.01)
    assert sum(core.values()) == pytest.approx(sum(hand.values()), rel=0.01)


def test_jaxmake_gpt_compiles_to_no_more_than_the_hand_written_program(ops: dict[str, Counter[str]]) -> None:
    """The library `Gpt`: the same matmuls, and no more than 5% more ops in all.

    Its program is not identical: its attention also guards fully masked rows (an `any`
    over keys, an `or`, a second `select`), its position table is stored `[dim, n_ctx]`
    (a transpose), and it runs per example under `vmap`; XLA fuses these differently.
    """
    gpt, hand = ops["jaxmake Gpt"], ops[_models.BASELINE]
    assert gpt["dot"] == hand["dot"]
    assert sum(gpt.values()) <= 1.05 * sum(hand.values())


def test_initial_loss_is_about_log_vocab(builds: dict[str, _models.Built]) -> None:
    tokens, targets = _models.batch(SPEC)
    for name, built in builds.items():
        loss = float(_models.cross_entropy(built.forward(built.fwd_state, tokens), targets))
        assert abs(loss - math.log(SPEC.vocab)) < 0.3, name


def test_sharding_benchmark_shows_what_each_device_holds(tmp_path: Path) -> None:
    """`sharding_step.py --quick` on one device, DP and FSDP (8 devices): a row each, and the bytes.

    Under DP every device holds all the weights and AdamW state; under FSDP each holds an
    eighth of every array with an `embed` axis, and the rest (biases, counts) whole.
    """
    script, out = Path(__file__).resolve().parents[1] / "benchmarks" / "sharding_step.py", tmp_path / "sharding.json"
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_backend_optimization_level=0",
    }  # faster compiles; the script adds 8 devices
    command = [sys.executable, str(script), "--quick", "--layouts", "DP", "FSDP", "--json", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    layouts = json.loads(out.read_text())["layouts"]
    assert list(layouts) == ["1 device", "DP", "FSDP"]
    assert all(f"\n| {name} | " in done.stdout for name in layouts)
    (total,) = layouts["1 device"]["bytes_per_device"].values()
    assert list(layouts["DP"]["bytes_per_device"].values()) == [total] * 8
    fsdp = layouts["FSDP"]["bytes_per_device"]
    assert len(fsdp) == 8 and total / 8 < max(fsdp.values()) < total / 4


GPU_STEP_SETTINGS = ["hand-f32", "hand-bf16-fused", "jm-f32-einsum", "jm-bf16-fused", "jm-bf16-fused-remat-layer"]
"""Both baselines, jaxmake in each precision, and one rematerialised setting: a smoke run's worth."""


def test_gpu_step_benchmark_runs_every_setting_on_the_cpu(tmp_path: Path) -> None:
    """`gpu_step.py --size tiny --n-layers 1` on a CPU: a row per setting, with every key, one parameter count.

    Structure only, no timings: the settings run in `SETTINGS` order; every figure is there;
    the fused attention falls back to `"xla"` off a GPU and is never cuDNN's; every setting
    is the same model (the hand-written parameter count, an initial loss about ln(vocab));
    each baseline's ratio is 1 and every jaxmake row has one.
    """
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_step.py"
    fast_compiles = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"  # 5x faster here
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": fast_compiles}
    command = [sys.executable, str(script), "--size", "tiny", "--n-layers", "1", "--steps", "2", "--warmup", "1"]
    command += ["--out", str(tmp_path), "--settings", *GPU_STEP_SETTINGS]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    rows = [json.loads(line) for line in (tmp_path / "gpu_step.jsonl").read_text().splitlines()]
    assert [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")] == rows
    assert [row["setting"] for row in rows] == [name for name in gpu_step.SETTINGS if name in GPU_STEP_SETTINGS]
    spec = replace(gpu_step.SIZES["tiny"], n_layers=1)
    for row in rows:
        name, setting = row["setting"], gpu_step.SETTINGS[row["setting"]]
        assert list(row) == list(gpu_step.ROW_KEYS), name
        assert row["n_params"] == spec.n_params(), name
        assert (row["attention"], row["cudnn_in_hlo"]) == ("einsum" if setting.attention == "einsum" else "xla", False)
        assert abs(row["initial_loss"] - math.log(spec.vocab)) < 0.3, name
        assert row["step_ms"] > 0 and row["compile_s"] > 0 and row["temp_bytes"] is not None, name
        assert row["ratio"] > 0 and (row["ratio"] == 1.0 or not setting.hand_written), name
        assert f"\n| {name} | " in done.stdout
    assert (tmp_path / "gpu_step.md").read_text().count("\n| hand-f32 | ") == 2  # speed and memory tables
