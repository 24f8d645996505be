"""Compile time of a `TransformerEncoder` by depth: layers unrolled (loop) or `jax.lax.scan`ned.

For each depth and mode, prints the median over `--repeats` of the seconds that
`jax.jit(fn).lower(...).compile()` takes for a vmapped forward pass (evaluation, no dropout)
and for a training step (`jax.value_and_grad` of a mean-square loss, with dropout, then an
SGD update), as a Markdown table, then the ratio deepest/shallowest of each column. Each
repeat makes the component anew, so nothing is reused from an earlier trace; lowering takes
abstract arrays, so no weights are allocated. In scan mode the time should stay flat with
depth; in loop mode it grows with it.

    python benchmarks/scan_compile.py --depths 2 8 24 --repeats 3
"""

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
from jax import Array

import jaxmake as jm
from jaxmake.components._transformer import TransformerEncoder


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Compile time of a TransformerEncoder by depth, loop vs scan.")
    parser.add_argument("--depths", type=int, nargs="+", default=[2, 8, 24], help="values of n_tfe_layers")
    parser.add_argument("--repeats", type=int, default=3, help="compiles per cell; the median is printed")
    parser.add_argument("--dim-model", type=int, default=128)
    parser.add_argument("--n-heads", type=int, default=4)
    parser.add_argument("--mlp-hidden", type=int, default=512)
    parser.add_argument("--length", type=int, default=64, help="T, tokens per example")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--dropout-keep-rate", type=float, default=0.9, help="dropout of the training step")
    return parser.parse_args()


def make_encoder(args: argparse.Namespace, depth: int, mode: str) -> jm.Component:
    config = TransformerEncoder(
        n_heads=args.n_heads,
        dim_model=args.dim_model,
        mlp_n_hidden=(args.mlp_hidden,),
        n_tfe_layers=depth,
        dropout_keep_rate=args.dropout_keep_rate,
        mlp_activation="gelu",
        scan_layers=MODES[mode],
    )
    return TransformerEncoder.make(config)


def forward(encoder: jm.Component) -> Callable[[jm.Weights, Array, Array], Array]:
    """`(weights, x, rng) -> y`: the batched forward pass in evaluation mode (`rng` unused)."""
    batched = jax.vmap(encoder.pipeline, in_axes=(None, 0, None))
    return lambda weights, x, rng: batched(weights, x, None)


def train_step(encoder: jm.Component, learning_rate: float = 1e-3) -> Callable[[jm.Weights, Array, Array], Any]:
    """`(weights, x, rng) -> (loss, new weights)`: one SGD step on a mean-square loss, with dropout."""
    batched = jax.vmap(encoder.pipeline, in_axes=(None, 0, 0))

    def step(weights: jm.Weights, x: Array, rng: Array) -> tuple[Array, jm.Weights]:
        def loss(w: jm.Weights) -> Array:
            return jnp.mean(jnp.square(batched(w, x, jr.split(rng, x.shape[0]))))

        value, grads = jax.value_and_grad(loss)(weights)
        return value, jax.tree.map(lambda w, g: w - learning_rate * g, weights, grads)

    return step


MODES = {"loop": False, "scan": True}
"""Each mode's `scan_layers`."""
STEPS = {"forward": forward, "train step": train_step}
"""Each compiled step's builder: `encoder -> (weights, x, rng) -> ...`."""


def compile_once(fn: Callable[..., Any], *abstract_args: Any) -> tuple[float, int]:
    """The seconds `jax.jit(fn).lower(...).compile()` takes, and the lines of the optimized HLO."""
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*abstract_args).compile()
    return time.perf_counter() - start, len((compiled.as_text() or "").splitlines())


def measure(args: argparse.Namespace, depth: int, step: str, mode: str) -> tuple[float, int]:
    """The median compile seconds over `args.repeats` fresh encoders, and the program's HLO lines."""
    x = jax.ShapeDtypeStruct((args.batch, args.length, args.dim_model), jnp.float32)
    rng = jax.ShapeDtypeStruct((), jr.key(0).dtype)
    runs = []
    for _ in range(args.repeats):
        encoder = make_encoder(args, depth, mode)
        runs.append(compile_once(STEPS[step](encoder), jm.abstract_weights(encoder.weight_params), x, rng))
    return statistics.median(seconds for seconds, _ in runs), runs[0][1]


def main() -> None:
    args = parse_args()
    columns = [(step, mode) for step in STEPS for mode in MODES]
    cells = {depth: {column: measure(args, depth, *column) for column in columns} for depth in args.depths}
    deep, shallow = max(args.depths), min(args.depths)
    print(
        f"jax {jax.__version__} on {jax.devices()[0].device_kind}: dim_model={args.dim_model}, n_heads={args.n_heads}, "
        f"mlp_n_hidden=({args.mlp_hidden},), T={args.length}, batch={args.batch}, "
        f"training dropout_keep_rate={args.dropout_keep_rate}"
    )
    for title, index, unit in (
        (f"compile seconds, median of {args.repeats}", 0, ".2f"),
        ("lines of optimized HLO", 1, "d"),
    ):
        print(f"\n{title}:\n")
        print("| n_tfe_layers | " + " | ".join(f"{step}, {mode}" for step, mode in columns) + " |")
        print("|---:|" + "---:|" * len(columns))
        for depth, row in cells.items():
            print(f"| {depth} | " + " | ".join(format(row[column][index], unit) for column in columns) + " |")
        ratios = " | ".join(f"{cells[deep][column][index] / cells[shallow][column][index]:.1f}x" for column in columns)
        print(f"| ratio {deep}/{shallow} | {ratios} |")


if __name__ == "__main__":
    main()
