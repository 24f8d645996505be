"""The train step of one GPT on 8 fake CPU devices: one device, DP, FSDP, TP and FSDP+TP.

The model is the GPT of `benchmarks/compare.py` (`_models.Spec`: vocab 256, context 64,
`dim_model` 128, 4 heads, 4 layers, MLP 512, batch 16). For each layout of `LAYOUTS` the
script makes the weights directly sharded (`jm.make_weights(..., mesh=, rules=)`) and runs
`jaxmake.training.train` on random tokens, logging every `--steps` steps. The first
window (it compiles) is dropped; the figure is the median over the next `--repeats`
windows of the seconds per step, as `train` runs it (the batch put on the devices
included), and its ratio to one device measured in the same run. Next to it: the bytes of
weights and AdamW state that the fullest device holds after training.

What CPU devices can show, and what they cannot. `--xla_force_host_platform_device_count=8`
cuts one machine into 8 devices that share its cores and its memory, so:

* no speedup from more devices is to be expected: the 8 devices run on the same cores (2
  here). One CPU device may leave a core idle that 8 devices keep busy, so DP or TP can
  come out a little faster than one device, while every collective is a memory copy plus
  a synchronisation, which FSDP pays most (it gathers every weight at every step). The
  ratios measure this, not what a real mesh would gain; on a busy machine they move by
  tens of percent from run to run (`--json` keeps every window);
* the per-device bytes are honest: they are what sharding buys, and they hold on any
  hardware. Data parallelism keeps a full copy on every device; FSDP splits the weights
  and optimizer state along `embed` over `data`; TP splits `mlp`, `heads` and `vocab`
  over `model`;
* the program is the real one: the same SPMD partitioning, the same collectives (see
  `tests/sharding/test_megatron.py`), compiled for CPU.

This script sets `XLA_FLAGS` for 8 CPU devices itself, before it imports JAX.

    python benchmarks/sharding_step.py --json sharding.json    # about 3 minutes on 2 cores
    python benchmarks/sharding_step.py --quick                 # a 1-layer model: checks that it runs
"""

import os

os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=8".strip()

import argparse
import json
import platform
import statistics
import sys
import tempfile
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax import Array

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _models import Spec, gpt_config

import jaxmake as jm
from jaxmake.components import LOSS_PORTS, Gpt
from jaxmake.sharding import RULES, make_mesh
from jaxmake.training import Batch, Task, TrainConfig, TrainResult, shuffled_batches, train

ONE_DEVICE = "1 device"
"""The layout every ratio divides by: no mesh, every array on the first device."""
LAYOUTS: dict[str, tuple[dict[str, int], str]] = {
    "DP": ({"data": 8, "model": 1}, "dp"),
    "FSDP": ({"data": 8, "model": 1}, "fsdp"),
    "TP": ({"data": 2, "model": 4}, "tp"),
    "FSDP+TP": ({"data": 4, "model": 2}, "fsdp_tp"),
}
"""The sharded layouts: name -> (mesh axis sizes, rule preset of `jaxmake.sharding.RULES`)."""

QUICK = Spec(dim=32, n_heads=4, n_layers=1, mlp=64)
"""The model of `--quick`: every layout still divides it, and it compiles in seconds."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train step time and per-device bytes of one GPT on 8 CPU devices.")
    parser.add_argument("--steps", type=int, default=10, help="train steps per timed window")
    parser.add_argument("--repeats", type=int, default=5, help="timed windows per layout; the median is printed")
    parser.add_argument(
        "--layouts", nargs="+", choices=list(LAYOUTS), default=list(LAYOUTS), help="sharded layouts to run"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a 1-layer, width-32 GPT, --steps 2 --repeats 1: a check that it runs"
    )
    parser.add_argument("--json", type=Path, help="write every number here")
    args = parser.parse_args()
    args.spec = QUICK if args.quick else Spec()
    if args.quick:
        args.steps, args.repeats = 2, 1
    return args


def gpt_task(gpt: jm.Component, spec: Spec) -> Task:
    """Mean next-token cross-entropy on 4 batches' worth of random token sequences."""
    loss_of = jax.vmap(gpt.get_fixed_process(LOSS_PORTS), in_axes=(None, 0))
    tokens = np.random.default_rng(0).integers(0, spec.vocab, (4 * spec.batch, spec.n_ctx + 1)).astype(np.int32)

    def loss(weights: jm.Weights, batch: Batch, key: Array) -> tuple[Array, dict[str, Array]]:
        inputs = {jm.Input: batch["tokens"][:, :-1], "targets": batch["tokens"][:, 1:]}
        return loss_of(weights, inputs)["loss"].mean(), {}

    return Task(loss, shuffled_batches({"tokens": tokens}, spec.batch, seed=0))


def bytes_per_device(result: TrainResult) -> dict[str, int]:
    """The bytes of weights and optimizer state on each device holding some."""
    held: defaultdict[str, int] = defaultdict(int)
    for array in jax.tree.leaves((result.weights, result.opt_state)):
        for shard in array.addressable_shards:
            held[str(shard.device)] += shard.data.nbytes
    return dict(held)


def run_layout(args: argparse.Namespace, gpt: jm.Component, task: Task, layout: str) -> dict[str, Any]:
    """Train on one layout; the seconds per step of each timed window, and the bytes held per device."""
    key = jax.random.key(0)
    axes, preset = LAYOUTS.get(layout, (None, None))
    if axes is None or preset is None:
        mesh, weights = None, jm.make_weights(key, gpt.weight_params)
    else:
        mesh = make_mesh(axes)
        weights = jm.make_weights(key, gpt.weight_params, mesh=mesh, rules=RULES[preset])
    steps = args.steps * (args.repeats + 1)
    spec = args.spec
    config = TrainConfig(
        steps=steps,
        batch_size=spec.batch,
        learning_rate=spec.learning_rate,
        weight_decay=spec.weight_decay,
        log_every=args.steps,
        eval_every=steps,
        checkpoint_every=steps,
    )
    with tempfile.TemporaryDirectory() as run_dir:
        result = train(task, weights, config, run_dir, progress="off", mesh=mesh)
    held = bytes_per_device(result)
    windows = [1 / entry["steps_per_s"] for entry in result.history[1:]]  # the first window compiles
    return {"mesh": axes, "rules": preset, "step_s": statistics.median(windows), "windows_s": windows,
            "max_bytes_per_device": max(held.values()), "bytes_per_device": held}  # fmt: skip


def main() -> None:
    args = parse_args()
    if jax.device_count() != 8:
        sys.exit(
            f"sharding_step.py needs 8 devices; with XLA_FLAGS={os.environ['XLA_FLAGS']!r} JAX sees {jax.devices()}"
        )
    gpt = Gpt.make(gpt_config(args.spec, False))
    task = gpt_task(gpt, args.spec)
    results = {layout: run_layout(args, gpt, task, layout) for layout in (ONE_DEVICE, *args.layouts)}
    base, spec = results[ONE_DEVICE], args.spec
    print(
        f"jax {jax.__version__}, {jax.device_count()} {jax.devices()[0].device_kind} devices on {os.cpu_count()} cores "
        f"({platform.processor() or platform.machine()}); GPT: vocab {spec.vocab}, context {spec.n_ctx}, dim_model "
        f"{spec.dim}, {spec.n_heads} heads, {spec.n_layers} layers, MLP {spec.mlp}, batch {spec.batch}; median of "
        f"{args.repeats} windows of {args.steps} steps\n"
    )
    print("| layout | mesh | rules | ms per step | ratio to 1 device | weights + AdamW state, MB per device | ratio |")
    print("|---|---|---|---:|---:|---:|---:|")
    for layout, r in results.items():
        mesh = "-" if r["mesh"] is None else ", ".join(f"{name}={size}" for name, size in r["mesh"].items())
        print(
            f"| {layout} | {mesh} | {r['rules'] or '-'} | {r['step_s'] * 1e3:.1f} | "
            f"{r['step_s'] / base['step_s']:.2f} | "
            f"{r['max_bytes_per_device'] / 1e6:.2f} | {r['max_bytes_per_device'] / base['max_bytes_per_device']:.3f} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"spec": asdict(args.spec), "steps": args.steps, "repeats": args.repeats,
                                         "jax": jax.__version__, "layouts": results}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
