"""Structural facts behind `benchmarks/compare.py` and `benchmarks/sharding_step.py`; no timings.

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
from pathlib import Path

import jax
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import _models

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
