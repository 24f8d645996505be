"""Initialising the benchmark GPT: `jm.make_weights` against hand-written inits, cold and warm.

The model is the GPT of `benchmarks/compare.py` (`_models.Spec`: vocab 256, context 64,
`dim_model` 128, 4 heads, 4 layers, MLP 512; 867,328 parameters in 54 arrays). Three inits
of it are timed:

* `make_weights`: `jm.make_weights(key, gpt.weight_params)` of the library `Gpt`;
* `hand eager`: `_models.init_raw`, the hand-written init, run op by op;
* `hand jit`: the same under one `jax.jit`, the baseline.

Cold is the first call in a fresh process, until its arrays are ready: trace, compile and
run. Each cold figure is measured in its own subprocess, after the model is built and a
trivial JAX op has started the backend, so that neither counts; `--repeats` rounds, the
three inits in turn within each round (so that a busy machine slows them alike), medians.
Warm is the median, over `--repeats` rounds of `--calls` calls each, of one call until its
arrays are ready, in this process, after a first call. Ratios are to `hand jit` measured in
the same run. Prints Markdown tables and whether the targets hold; `--json PATH` writes every
number.

    python benchmarks/init_weights.py --json init.json      # about 3 minutes on 2 cores
    python benchmarks/init_weights.py --quick               # one cold round
"""

import argparse
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _models import Spec, count, gpt_config, init_raw

import jaxmake as jm
from jaxmake.components import Gpt

Init = Callable[[jax.Array], Any]
"""`key -> weights`: one way to initialise the GPT."""

BASELINE = "hand jit"
TARGETS = {"warm": 1.0, "cold": 1.0}
"""The most `make_weights` may take, as a multiple of `hand jit`."""


def make_inits(spec: Spec) -> dict[str, Init]:
    """Each init, built fresh: nothing is traced or compiled yet."""
    weight_params = Gpt.make(gpt_config(spec, False)).weight_params
    hand = functools.partial(init_raw, spec, False)
    return {
        "make_weights": lambda key: jm.make_weights(key, weight_params),
        "hand eager": hand,
        BASELINE: jax.jit(hand),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="make_weights vs hand-written inits of one GPT, cold and warm.")
    parser.add_argument("--repeats", type=int, default=5, help="cold subprocesses per init, and warm rounds")
    parser.add_argument("--calls", type=int, default=40, help="warm calls timed per round")
    parser.add_argument("--quick", action="store_true", help="--repeats 1 --calls 10")
    parser.add_argument("--json", type=Path, help="write every number here")
    parser.add_argument("--cold", help=argparse.SUPPRESS)  # in a subprocess: time this init's first call
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.calls = 1, 10
    return args


def seconds_until_ready(init: Init, key: jax.Array) -> float:
    """The seconds from calling `init(key)` until every array it returns is computed."""
    start = time.perf_counter()
    jax.block_until_ready(init(key))
    return time.perf_counter() - start


def cold_in_this_process(name: str) -> float:
    """The first call of init `name`, the model built and the backend started beforehand."""
    inits = make_inits(Spec())
    key = jr.key(0)
    jax.block_until_ready(jnp.zeros(()) + 1)
    return seconds_until_ready(inits[name], key)


def cold_in_a_subprocess(name: str) -> float:
    """`cold_in_this_process(name)`, run by this script in a fresh Python."""
    command = [sys.executable, __file__, "--cold", name]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"the cold run of {name!r} failed:\n{done.stderr[-3000:]}")
    seconds: float = json.loads(done.stdout.strip().splitlines()[-1])["seconds"]
    return seconds


def cold_medians(names: list[str], repeats: int) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Median cold seconds per init, each in its own subprocess, the inits in turn per round; and every run."""
    runs: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(repeats):
        for name in names:
            runs[name].append(cold_in_a_subprocess(name))
    return {name: statistics.median(values) for name, values in runs.items()}, runs


def warm_medians(inits: dict[str, Init], repeats: int, calls: int) -> dict[str, float]:
    """Median warm seconds per call of each init (after a first call), the inits in turn per round."""
    key = jr.key(0)
    times: dict[str, list[float]] = {name: [] for name in inits}
    for init in inits.values():
        seconds_until_ready(init, key)  # compiles what needs compiling
    for _ in range(repeats):
        for name, init in inits.items():
            times[name] += [seconds_until_ready(init, key) for _ in range(calls)]
    return {name: statistics.median(values) for name, values in times.items()}


def table(title: str, header: list[str], rows: list[list[str]]) -> str:
    lines = [f"\n### {title}\n", "| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def main() -> None:
    args = parse_args()
    if args.cold is not None:
        print(json.dumps({"seconds": cold_in_this_process(args.cold)}))
        return
    spec = Spec()
    inits = make_inits(spec)
    n_params = {name: count(init(jr.key(0))) for name, init in inits.items()}
    assert set(n_params.values()) == {spec.n_params()}, f"parameter counts differ: {n_params}"
    device = jax.devices()[0]
    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"jax {jax.__version__} on {device.platform} ({device.device_kind})"
    )
    print(
        f"# Initialising the benchmark GPT ({spec.n_params():,} parameters)\n\n{machine}\n"
        f"cold: median of {args.repeats} fresh processes per init; warm: median of {args.repeats} x {args.calls} calls"
    )

    started = time.perf_counter()
    warm = warm_medians(inits, args.repeats, args.calls)
    cold, cold_runs = cold_medians(list(inits), args.repeats)
    rows = [
        [name, f"{cold[name]:.2f}", f"{cold[name] / cold[BASELINE]:.3f}",
         f"{warm[name] * 1e3:.2f}", f"{warm[name] / warm[BASELINE]:.3f}"]
        for name in inits
    ]  # fmt: skip
    print(table("Init of the GPT", ["init", "cold s", "cold / hand jit", "warm ms", "warm / hand jit"], rows))
    ratios = {kind: figures["make_weights"] / figures[BASELINE] for kind, figures in (("warm", warm), ("cold", cold))}
    rows = [
        [f"make_weights {kind} / hand jit", f"{ratios[kind]:.3f}", f"≤ {bound}",
         "holds" if ratios[kind] <= bound else "**misses**"]
        for kind, bound in TARGETS.items()
    ]  # fmt: skip
    print(table("Targets", ["target", "value", "bound", ""], rows))
    print(f"\ntotal {time.perf_counter() - started:.0f} s")

    if args.json is not None:
        record = {
            "machine": machine,
            "spec": spec.__dict__,
            "args": {k: str(v) for k, v in vars(args).items()},
            "n_params": n_params,
            "cold_s": cold,
            "cold_runs_s": cold_runs,
            "warm_s": warm,
            "targets": [
                {"target": f"make_weights {kind} / hand jit", "value": ratios[kind], "bound": bound,
                 "holds": ratios[kind] <= bound}
                for kind, bound in TARGETS.items()
            ],
        }  # fmt: skip
        args.json.write_text(json.dumps(record, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
