"""jaxmake against hand-written JAX and the peer libraries, on one identical GPT.

The model (`benchmarks/_models.py`, peers in `benchmarks/_peers.py`): vocab 256, context 64,
`dim_model` 128, 4 heads, 4 layers, MLP 512 (tanh gelu), pre-LayerNorm, learned positions,
final LayerNorm, untied head with bias, AdamW, batch 16, float32. Parameter counts are
asserted equal and initial losses within 0.3 of ln(256). Every figure is a median over
`--repeats`, the implementations measured in turn within each repeat (so that a busy machine
slows them alike), and given as a ratio to hand-written JAX measured in the same run:

1. steady-state train step time;
2. per-call dispatch time of a jitted forward (the time until the call returns, the previous
   result already ready): the full GPT, and a tiny model (one 8 -> 8 linear on one example);
3. first-call time of the train step at 4 layers (trace + compile + one step); and by depth,
   the ahead-of-time trace + compile time alone (`step.lower(...).compile()`; one step's run
   time grows with depth by itself), for the Python loop and for `scan_layers=True`
   (jaxmake `Gpt`, and a hand-written `jax.lax.scan` for the baseline);
4. jaxmake `Gpt.make` with and without make-time contract checks (`JAXMAKE_CHECK_CONTRACTS=0`)
   at the deepest depth, next to its trace + compile time;
5. the wall time of the default `jaxmake train digits` to its final accuracy.

Prints one Markdown table per figure and which of the issue's targets hold; `--json PATH`
writes every number. Peers that fail to import are listed, not faked.

    python benchmarks/compare.py --json bench.json              # 6 to 10 minutes on 2 cores
    python benchmarks/compare.py --quick                        # about 3 minutes, no digits run
"""

import argparse
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _models import BASELINE, BUILDERS, SCANNABLE, TINY, Builder, Built, Spec, batch, gpt_config
from _peers import peer_builders

from jaxmake.components import Gpt

JAXMAKE = ("jaxmake Gpt", "jaxmake core")
"""The implementations the targets are about."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="jaxmake vs hand-written JAX and the peers, on one GPT.")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of every measurement; medians are printed")
    parser.add_argument("--steps", type=int, default=10, help="train steps timed per repeat")
    parser.add_argument(
        "--calls", type=int, default=30, help="GPT forward calls timed per round (x30 for the tiny model)"
    )
    parser.add_argument("--compile-repeats", type=int, default=2, help="fresh compiles per cell of figure 3b")
    parser.add_argument("--depths", type=int, nargs="+", default=[2, 8, 24], help="depths of the compile-time figure")
    parser.add_argument("--skip-digits", action="store_true", help="skip `jaxmake train digits`")
    parser.add_argument("--skip-peers", action="store_true", help="only jaxmake and hand-written JAX")
    parser.add_argument(
        "--quick", action="store_true", help="--repeats 1 --compile-repeats 1 --steps 5 --depths 2 8 --skip-digits"
    )
    parser.add_argument("--json", type=Path, help="write every number here")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.compile_repeats, args.steps, args.depths, args.skip_digits = 1, 1, 5, [2, 8], True
    return args


def first_call(built: Built, tokens: jax.Array, targets: jax.Array) -> tuple[float, Any, float]:
    """The seconds of the first (tracing, compiling) train step; the state after it; its loss."""
    start = time.perf_counter()
    state, loss = built.step(built.state, tokens, targets)
    jax.block_until_ready(loss)
    return time.perf_counter() - start, state, float(loss)


def trace_and_compile_seconds(built: Built, tokens: jax.Array, targets: jax.Array) -> float:
    """The seconds to trace, lower and compile the train step ahead of time; no step runs.

    A first call adds one step's run time, which grows with depth by itself (one 24-layer
    step is ~12x a 2-layer one), so it would hide how compilation alone grows.
    """
    start = time.perf_counter()
    built.step.lower(built.state, tokens, targets).compile()  # type: ignore[attr-defined]
    return time.perf_counter() - start


def step_seconds(built: Built, state: Any, tokens: jax.Array, targets: jax.Array, n: int) -> tuple[float, Any]:
    """The mean seconds of `n` train steps run back to back (as training runs), and the state after."""
    jax.block_until_ready(state)
    start = time.perf_counter()
    for _ in range(n):
        state, loss = built.step(state, tokens, targets)
    jax.block_until_ready((state, loss))
    return (time.perf_counter() - start) / n, state


def call_seconds(fn: Callable[[Any, jax.Array], jax.Array], state: Any, x: jax.Array, n: int) -> float:
    """The median seconds until one call of `fn` returns, its previous result already computed."""
    times = []
    out = fn(state, x)
    for _ in range(n):
        jax.block_until_ready(out)
        start = time.perf_counter()
        out = fn(state, x)
        times.append(time.perf_counter() - start)
    jax.block_until_ready(out)
    return statistics.median(times)


def median_rounds(names: list[str], repeats: int, measure: Callable[[str], float]) -> dict[str, float]:
    """`measure(name)` for each name in turn, `repeats` rounds; the median per name."""
    runs: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(repeats):
        for name in names:
            runs[name].append(measure(name))
    return {name: statistics.median(values) for name, values in runs.items()}


def table(title: str, header: list[str], rows: list[list[str]]) -> str:
    lines = [f"\n### {title}\n", "| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3g}"


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.3g}"


def ratio(value: float, base: float) -> str:
    return f"{value / base:.3f}"


def figures_1_2(
    args: argparse.Namespace, builders: dict[str, Builder], tiny: dict[str, Any], spec: Spec
) -> dict[str, Any]:
    """Build every implementation at 4 layers; time its first call, steps and forward dispatch."""
    tokens, targets = batch(spec)
    built: dict[str, Built] = {}
    states: dict[str, Any] = {}
    first: dict[str, float] = {}
    losses: dict[str, float] = {}
    for name, builder in builders.items():
        built[name] = builder(spec, False)
        first[name], states[name], losses[name] = first_call(built[name], tokens, targets)
    counts = {name: b.n_params for name, b in built.items()}
    assert set(counts.values()) == {spec.n_params()}, f"parameter counts differ: {counts} (expected {spec.n_params()})"
    for name, loss in losses.items():
        assert abs(loss - math.log(spec.vocab)) < 0.3, (
            f"{name}: initial loss {loss:.3f}, not within 0.3 of ln({spec.vocab})"
        )

    names = list(built)

    def one_step(name: str) -> float:
        seconds, states[name] = step_seconds(built[name], states[name], tokens, targets, args.steps)
        return seconds

    median_rounds(names, 1, one_step)  # warm-up: every step compiled and run
    steps = median_rounds(names, args.repeats, one_step)
    rounds = 2 * args.repeats + 1  # dispatch rounds are cheap and noisy
    gpt_dispatch = median_rounds(
        names, rounds, lambda name: call_seconds(built[name].forward, built[name].fwd_state, tokens, args.calls)
    )
    tiny_built = {name: tiny[name]() for name in names}
    tiny_dispatch = median_rounds(
        names,
        rounds,
        lambda name: call_seconds(tiny_built[name][0], tiny_built[name][1], tiny_built[name][2], 30 * args.calls),
    )
    return {"n_params": counts, "initial_loss": losses, "first_call_s": first, "step_s": steps,
            "dispatch_gpt_s": gpt_dispatch, "dispatch_tiny_s": tiny_dispatch}  # fmt: skip


def figure_3(args: argparse.Namespace, spec: Spec) -> dict[str, dict[str, dict[int, float]]]:
    """Trace + compile seconds of fresh train steps by depth: `{mode: {impl: {depth: s}}}`."""
    tokens, targets = batch(spec)
    out: dict[str, dict[str, dict[int, float]]] = {}
    for mode, scan in (("loop", False), ("scan", True)):
        out[mode] = {name: {} for name in SCANNABLE}
        for depth in args.depths:

            def compile_once(name: str, depth: int = depth, scan: bool = scan) -> float:
                return trace_and_compile_seconds(BUILDERS[name](spec.deeper(depth), scan), tokens, targets)

            for name, seconds in median_rounds(list(SCANNABLE), args.compile_repeats, compile_once).items():
                out[mode][name][depth] = seconds
    return out


def figure_4(args: argparse.Namespace, spec: Spec) -> dict[str, float]:
    """Median seconds of `Gpt.make` at the deepest depth, with and without make-time checks (loop layout)."""
    config = gpt_config(spec.deeper(max(args.depths)), False)
    saved = os.environ.get("JAXMAKE_CHECK_CONTRACTS")

    def make(checks: str) -> float:
        os.environ["JAXMAKE_CHECK_CONTRACTS"] = "1" if checks == "checks" else "0"
        start = time.perf_counter()
        Gpt.make(config)
        return time.perf_counter() - start

    try:
        times = median_rounds(["checks", "no checks"], args.repeats, make)
    finally:
        if saved is None:
            os.environ.pop("JAXMAKE_CHECK_CONTRACTS", None)
        else:
            os.environ["JAXMAKE_CHECK_CONTRACTS"] = saved
    return {"make_with_checks_s": times["checks"], "make_without_checks_s": times["no checks"]}


def figure_5() -> dict[str, Any]:
    """Run the default `jaxmake train digits` in a subprocess; its wall time and final line."""
    with tempfile.TemporaryDirectory() as out:
        command = [
            sys.executable,
            "-c",
            "from jaxmake.cli import entry_point; entry_point()",
            "train",
            "digits",
            "--out",
            out,
        ]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - start
    lines = done.stdout.strip().splitlines()
    last = lines[-1] if lines else done.stderr.strip()[-300:]
    found = re.search(r"test accuracy ([\d.]+)%.* in (\d+) s", last)
    return {"returncode": done.returncode, "wall_s": wall, "last_line": last,
            "test_accuracy": float(found.group(1)) / 100 if found else None,
            "train_s": float(found.group(2)) if found else None}  # fmt: skip


def main() -> None:
    args = parse_args()
    spec = Spec()
    builders, tiny = dict(BUILDERS), dict(TINY)
    missing: dict[str, str] = {}
    if not args.skip_peers:
        peers, peer_tiny, missing = peer_builders()
        builders |= peers
        tiny |= peer_tiny
    started = time.perf_counter()
    device = jax.devices()[0]
    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"jax {jax.__version__} on {device.platform} ({device.device_kind})"
    )
    print(
        f"# jaxmake vs hand-written JAX and peers\n\n{machine}; {spec}\n"
        f"medians: train steps of {args.repeats} rounds x "
        f"{args.steps} steps; dispatch of {2 * args.repeats + 1} rounds; compiles (3b) of {args.compile_repeats}; "
        f"3a is one first call per implementation"
    )
    for name, why in missing.items():
        print(f"\n**{name} not measured**: {why}")
    versions = {}
    for module in ("jax", "optax", "flax", "equinox", "haiku"):
        try:
            versions[module] = str(getattr(__import__(module), "__version__", "?"))
        except Exception:
            versions[module] = "not installed"
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))

    fig12 = figures_1_2(args, builders, tiny, spec)
    base = BASELINE
    rows = []
    for name in builders:
        rows.append([name, str(fig12["n_params"][name]), f"{fig12['initial_loss'][name]:.3f}",
                     ms(fig12["step_s"][name]), ratio(fig12["step_s"][name], fig12["step_s"][base])])  # fmt: skip
    print(
        table(
            "1. Train step (4 layers, batch 16)", ["implementation", "params", "initial loss", "step ms", "ratio"], rows
        )
    )
    rows = []
    for name in builders:
        g, t = fig12["dispatch_gpt_s"][name], fig12["dispatch_tiny_s"][name]
        rows.append(
            [name, us(g), ratio(g, fig12["dispatch_gpt_s"][base]), us(t), ratio(t, fig12["dispatch_tiny_s"][base])]
        )
    print(
        table(
            "2. Dispatch of a jitted forward, per call", ["implementation", "GPT µs", "ratio", "tiny µs", "ratio"], rows
        )
    )
    rows = [[name, f"{s:.2f}", ratio(s, fig12["first_call_s"][base])] for name, s in fig12["first_call_s"].items()]
    print(
        table(
            "3a. First call (trace + compile + one step) of the train step, 4 layers",
            ["implementation", "seconds", "ratio"],
            rows,
        )
    )

    fig3 = figure_3(args, spec)
    header = (
        ["depth"]
        + [f"{name}, {mode} s" for mode in fig3 for name in SCANNABLE]
        + ["jaxmake/hand loop", "jaxmake/hand scan"]
    )
    rows = []
    for depth in args.depths:
        cells = [f"{fig3[mode][name][depth]:.2f}" for mode in fig3 for name in SCANNABLE]
        cells += [ratio(fig3[mode]["jaxmake Gpt"][depth], fig3[mode][base][depth]) for mode in ("loop", "scan")]
        rows.append([str(depth), *cells])
    deep, shallow = max(args.depths), min(args.depths)
    growth = [f"{fig3[mode][name][deep] / fig3[mode][name][shallow]:.2f}x" for mode in fig3 for name in SCANNABLE]
    rows.append([f"{deep}/{shallow}", *growth, "", ""])
    print(table("3b. Trace + compile (ahead of time, no step run) of the train step by depth", header, rows))

    fig4 = figure_4(args, spec)
    compile_deep = fig3["loop"]["jaxmake Gpt"][deep]
    make_share = fig4["make_with_checks_s"] / compile_deep
    rows = [[str(deep), f"{fig4['make_with_checks_s']:.3f}", f"{fig4['make_without_checks_s']:.3f}",
             f"{compile_deep:.2f}", f"{make_share:.1%}"]]  # fmt: skip
    print(
        table(
            "4. jaxmake `Gpt.make` (loop layout)",
            ["depth", "make + checks s", "make, no checks s", "trace + compile s", "make+checks / compile"],
            rows,
        )
    )

    fig5 = None if args.skip_digits else figure_5()
    if fig5 is not None:
        acc = "?" if fig5["test_accuracy"] is None else f"{fig5['test_accuracy']:.2%}"
        rows = [[f"{fig5['wall_s']:.1f}", str(fig5["train_s"]), acc, f"`{fig5['last_line']}`"]]
        print(
            table("5. `jaxmake train digits` (defaults)", ["wall s", "reported s", "test accuracy", "last line"], rows)
        )

    targets: list[tuple[str, float, float]] = []
    for name in JAXMAKE:
        targets.append((f"{name} train step / hand", fig12["step_s"][name] / fig12["step_s"][base], 1.02))
        targets.append(
            (f"{name} GPT dispatch / hand", fig12["dispatch_gpt_s"][name] / fig12["dispatch_gpt_s"][base], 1.05)
        )
        targets.append(
            (f"{name} tiny dispatch / hand", fig12["dispatch_tiny_s"][name] / fig12["dispatch_tiny_s"][base], 1.05)
        )
    targets.append(
        (
            f"jaxmake Gpt scan compile {deep}/{shallow} layers",
            fig3["scan"]["jaxmake Gpt"][deep] / fig3["scan"]["jaxmake Gpt"][shallow],
            1.3,
        )
    )
    for depth in args.depths:
        targets.append(
            (
                f"jaxmake Gpt loop compile / hand loop, {depth} layers",
                fig3["loop"]["jaxmake Gpt"][depth] / fig3["loop"][base][depth],
                1.05,
            )
        )
    targets.append((f"Gpt.make + checks / first compile, {deep} layers", make_share, 0.10))
    rows = [
        [what, f"{value:.3f}", f"≤ {bound}", "holds" if value <= bound else "**misses**"]
        for what, value, bound in targets
    ]
    print(table("Targets (issue 5)", ["target", "value", "bound", ""], rows))
    print(f"\ntotal {time.perf_counter() - started:.0f} s")

    if args.json is not None:
        record = {
            "machine": machine,
            "versions": versions,
            "spec": spec.__dict__,
            "args": {k: str(v) for k, v in vars(args).items()},
            "missing_peers": missing,
            "figures_1_2": fig12,
            "figure_3": fig3,
            "figure_4": fig4,
            "figure_5": fig5,
            "targets": [{"target": w, "value": v, "bound": b, "holds": v <= b} for w, v, b in targets],
        }
        args.json.write_text(json.dumps(record, indent=1, default=str))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
