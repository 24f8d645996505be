"""`plan_step` against reality: XLA's FLOPs scale as the analytic formula says, and the planned memory is
the measured peak of a real step; and the largest-batch search against a brute-force answer."""

import math
import sys

import jax
import pytest
from hypothesis import given
from hypothesis import strategies as st

import jaxmake as jm
from jaxmake import training
from jaxmake.cli._plan import MAX_BATCH, Planner, analytic_flops, largest_batch, measured_peak, step_inputs
from jaxmake.components import Gpt

MEMORY_TOLERANCE = (0.9, 1.3)
"""Measured peak / planned peak on a Linux CPU. The measurement adds what XLA's runtime allocates on a
program's first run besides its buffers (10-17 MiB here), so the sizes below plan at least 70 MiB."""


def _gpt(dim_model: int, n_tfe_layers: int, n_ctx: int = 32) -> Gpt:
    return Gpt(
        vocab_size=64,
        n_ctx=n_ctx,
        n_tfe_layers=n_tfe_layers,
        n_heads=4,
        dim_model=dim_model,
        mlp_n_hidden=(4 * dim_model,),
    )


def _plan(config: Gpt, batch_size: int) -> training.StepPlan:
    planner = Planner({}, None, "dp")
    return planner.plan(config, planner.check(config, batch_size), batch_size).plan


def test_flops_scale_as_the_analytic_formula_when_width_and_depth_double() -> None:
    base, wide, deep = _gpt(64, 1), _gpt(128, 1), _gpt(64, 2)
    flops = {name: _plan(config, 8).flops for name, config in (("base", base), ("wide", wide), ("deep", deep))}
    analytic = {name: analytic_flops(config) for name, config in (("base", base), ("wide", wide), ("deep", deep))}
    formula = {name: value[0] for name, value in analytic.items() if value is not None}
    tokens = 8 * base.n_ctx
    assert flops["base"] / tokens == pytest.approx(formula["base"], rel=0.15)  # XLA also counts softmax, norms, AdamW
    for name in ("wide", "deep"):
        measured_ratio = flops[name] / flops["base"]
        assert measured_ratio == pytest.approx(formula[name] / formula["base"], rel=0.05), name
    assert formula["wide"] / formula["base"] > 3.5  # width doubles: the matrices' FLOPs about quadruple
    assert 1.7 < formula["deep"] / formula["base"] < 2  # depth doubles: all but the head doubles


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the CPU measurement reads /proc/self (Linux)")
@pytest.mark.parametrize(("dim_model", "n_tfe_layers", "batch_size"), [(128, 2, 32), (256, 2, 64)])
def test_planned_memory_is_the_measured_peak_of_a_real_step(dim_model: int, n_tfe_layers: int, batch_size: int) -> None:
    config = _gpt(dim_model, n_tfe_layers, n_ctx=64)
    planner = Planner({}, None, "dp")
    planned = planner.plan(config, planner.check(config, batch_size), batch_size)
    assert planned.plan.peak_bytes >= 70 * 2**20
    assert planned.plan.argument_bytes >= planned.plan.weight_bytes + planned.plan.optimizer_bytes
    measured = measured_peak(planned, None, "dp")
    assert measured is not None
    low, high = MEMORY_TOLERANCE
    assert low <= measured / planned.plan.peak_bytes <= high, (measured, planned.plan.peak_bytes)


def test_a_plan_counts_each_input_and_allocates_nothing() -> None:
    config = _gpt(32, 1)
    before = {id(x) for x in jax.live_arrays()}
    plan = _plan(config, 4)
    assert not [x for x in jax.live_arrays() if id(x) not in before and x.nbytes > 4096]
    n_params = sum(math.prod(spec.shape) for spec in jm.flat_weights(step_inputs(config).weight_params).values())
    assert plan.weight_bytes == 4 * n_params
    assert 2 * plan.weight_bytes <= plan.optimizer_bytes <= 2 * plan.weight_bytes + 64  # AdamW's moments, a count
    assert plan.batch_bytes == 2 * 4 * config.n_ctx * 4
    assert plan.peak_bytes == plan.argument_bytes + plan.temp_bytes + plan.output_bytes - plan.alias_bytes
    assert plan.alias_bytes >= plan.weight_bytes + plan.optimizer_bytes  # the loop donates them
    assert (plan.devices, plan.collectives, plan.loops) == (1, {}, 0)


def test_scanned_layers_show_as_a_loop() -> None:
    assert _plan(Gpt(vocab_size=16, n_ctx=8, n_tfe_layers=2, dim_model=8, n_heads=2, scan_layers=True), 2).loops >= 1


def _brute_force(peak_of: dict[int, int], limit: int, multiple: int) -> int | None:
    fitting = [b for b in range(multiple, max(peak_of) + 1, multiple) if peak_of[b] <= limit]
    return max(fitting) if fitting else None


@given(
    fixed=st.integers(0, 10**6),
    per_example=st.integers(1, 10**4),
    bumps=st.lists(st.integers(0, 10**4), min_size=4, max_size=4),
    first=st.integers(1, 3000),
    limit=st.integers(1, 3 * 10**7),
    multiple=st.sampled_from([1, 2, 8]),
)
def test_largest_batch_is_the_largest_that_fits(
    fixed: int, per_example: int, bumps: list[int], first: int, limit: int, multiple: int
) -> None:
    """Against every batch tried by brute force, for peaks that grow linearly with steps and bumps."""
    first = first * multiple
    n = 4000 * 8

    def peak(b: int) -> int:
        return fixed + per_example * b + sum(bump * (b >= (i + 1) * 700) for i, bump in enumerate(bumps))

    calls: list[int] = []

    def peak_of(b: int) -> int:
        assert b % multiple == 0 and 0 < b <= MAX_BATCH
        calls.append(b)
        return peak(b)

    fit = largest_batch(peak_of, first, peak(first), limit, multiple)
    expected = _brute_force({b: peak(b) for b in range(multiple, n + 1, multiple)}, limit, multiple)
    if expected is not None and expected >= n:
        return  # beyond the table; the search's own bound is tested below
    assert fit.batch == expected
    assert fit.compiles == len(calls) <= 2 * math.ceil(math.log2(n)) + 4


def test_largest_batch_stops_at_its_bound() -> None:
    fit = largest_batch(lambda b: b, 1, 1, 10**12, 1)
    assert (fit.batch, fit.capped) == (MAX_BATCH, True)
    assert fit.compiles < 40
