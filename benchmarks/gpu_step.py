"""One GPT train step at the speed of the chip (issue 12): hand-written JAX and jaxmake `Gpt`, by precision.

The model is the GPT of `benchmarks/_models.py` at the size of `--size` (`gpt2-small`:
vocab 32768, context 1024, `dim_model` 768, 12 heads, 12 layers, MLP 3072, batch 16; `tiny`:
a smoke run on a CPU), each dimension overridable by its flag.
One train step is the loss, its gradient and an AdamW update (`_models.optimizer`, as in
`benchmarks/compare.py`), jitted; the parameters are float32 in every setting. The settings
(`--settings`, all by default, measured in the order of `SETTINGS`):

* `hand-f32`: hand-written JAX, float32, attention written out with einsums;
* `hand-bf16-fused`: the same code with bfloat16 matmuls and activations and
  `jax.nn.dot_product_attention(..., is_causal=True, implementation=...)`: `"cudnn"` on a
  GPU, `"xla"` elsewhere; LayerNorm statistics, logits and loss in float32;
* `jm-*`: jaxmake `Gpt` with `dtype`, `attention_impl`, `remat`, and `scan_layers=True`
  with `scan_unroll` n for `scan-n` (the others run their layers in a Python loop).

For each setting it prints one JSON line as soon as it is measured (and appends it to
`DIR/gpu_step.jsonl` with `--out DIR`, so that a run cut short keeps what it measured), then
Markdown tables. Each line holds:

* `compile_s`: seconds to trace, lower and compile the step ahead of time
  (`jax.jit(step).lower(...).compile()`); the steps then call the compiled executable;
* `step_ms`: the median over `--steps` steps of the wall time of one step, called with the
  previous step finished and waited for with `block_until_ready`; the first step (its loss
  is `initial_loss`) and `--warmup` more run untimed before;
* `tflops` and `peak_share`: the analytic FLOPs of one step (`Spec.train_flops`:
  `3 · tokens · (L · (2·(3d² + d² + 2·d·h) + 4·T·d) + 2·d·V)`, the matmuls of the forward
  and backward passes, the full `[T, T]` attention square, not what rematerialisation
  recomputes) divided by `step_ms`, and that against `--peak-tflops` (790 by default: the
  H200's dense bfloat16 rate). Float32 rows are given against the same bfloat16 peak;
* `temp_bytes`, `argument_bytes`, `output_bytes`, `peak_bytes`: the compiled step's
  `memory_analysis()` (`temp_size_in_bytes`, ..., `peak_memory_in_bytes`; `None` where the
  backend reports none). `device_peak_bytes` is the device's `memory_stats()`
  `peak_bytes_in_use` after the setting: the peak of the whole process so far, not of this
  setting alone (`None` on a CPU);
* `n_params`, `initial_loss` (the first step's, about ln(vocab)) and `final_loss`;
* `attention`: `einsum`, or the `implementation` the fused path takes (jaxmake's rule:
  `cudnn` on a GPU for 16-bit dtypes and head sizes that are multiples of 8 up to 128, `xla`
  otherwise, so `xla` on a CPU); `cudnn_in_hlo`: whether the compiled step calls cuDNN's
  fused attention (a `__cudnn$fmha...` custom call: "fmha" in its optimized HLO);
* `ratio`: `step_ms` over that of the hand-written setting of the same precision measured
  in the same run (`hand-f32` for float32 rows, `hand-bf16-fused` for bfloat16 ones; `None`
  if it was not measured). For `scan-n` rows the baseline loops over its layers.

No figure is asserted; `tests/test_benchmarks.py` runs the tiny size to check the structure.
A setting that raises is reported with an `error` (the others still run) and the exit
status is 1.

    python benchmarks/gpu_step.py --size gpt2-small --out runs/gpu  # on a GPU; see benchmarks/gpu_run.sh
    python benchmarks/gpu_step.py --size tiny --settings hand-f32 jm-f32-einsum

On a CPU, XLA's compiles dominate a tiny run (5 to 20 s per setting on 2 busy cores); these
flags cut them about 5 times, to a few seconds per setting (the test sets them too):

    XLA_FLAGS="--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false" \
        python benchmarks/gpu_step.py --size tiny
"""

import argparse
import gc
import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast

import jax

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _models import AttentionPath, Built, Compute, Spec, batch, build_gpt, build_raw, gpt_config

SIZES = {
    "gpt2-small": Spec(vocab=32768, n_ctx=1024, dim=768, n_heads=12, n_layers=12, mlp=3072, batch=16),
    "tiny": Spec(vocab=256, n_ctx=32, dim=32, n_heads=2, n_layers=2, mlp=64, batch=4),
}
"""The `--size` presets."""
OVERRIDES = ("vocab", "n_ctx", "dim", "n_heads", "n_layers", "mlp", "batch")
"""The `Spec` fields a flag can override (`n_ctx` by `--n-ctx`, ...)."""


@dataclass(frozen=True)
class Setting:
    """One measured configuration of the train step.

    Args:
        hand_written: the hand-written model of `_models.py`, or jaxmake's `Gpt`.
        dtype: the compute dtype (the parameters stay float32).
        attention: `"einsum"`, or `"fused"` (`jax.nn.dot_product_attention`).
        remat: jaxmake's `remat` (`"none"` for the hand-written model).
        scan_unroll: 0 runs the layers in a Python loop; `n >= 1` runs them with
            `jax.lax.scan` (`scan_layers=True`), `n` layers per iteration.
    """

    hand_written: bool
    dtype: Literal["float32", "bfloat16"]
    attention: Literal["einsum", "fused"]
    remat: Literal["none", "layer", "dots"] = "none"
    scan_unroll: int = 0

    @property
    def baseline(self) -> str:
        """The name of the hand-written setting of the same precision."""
        return "hand-f32" if self.dtype == "float32" else "hand-bf16-fused"

    @property
    def layers(self) -> str:
        return f"scan, unroll {self.scan_unroll}" if self.scan_unroll else "loop"


SETTINGS = {
    "hand-f32": Setting(True, "float32", "einsum"),
    "hand-bf16-fused": Setting(True, "bfloat16", "fused"),
    "jm-f32-einsum": Setting(False, "float32", "einsum"),
    "jm-bf16-fused": Setting(False, "bfloat16", "fused"),
    "jm-bf16-einsum": Setting(False, "bfloat16", "einsum"),
    "jm-bf16-fused-remat-layer": Setting(False, "bfloat16", "fused", remat="layer"),
    "jm-bf16-fused-remat-dots": Setting(False, "bfloat16", "fused", remat="dots"),
    "jm-bf16-fused-scan-1": Setting(False, "bfloat16", "fused", scan_unroll=1),
    "jm-bf16-fused-scan-2": Setting(False, "bfloat16", "fused", scan_unroll=2),
    "jm-bf16-fused-scan-4": Setting(False, "bfloat16", "fused", scan_unroll=4),
}
"""Every setting, in the order they are measured: the baselines first, then by importance."""

ROW_KEYS = (
    "run", "setting", "implementation", "dtype", "attention", "cudnn_in_hlo", "remat", "layers", "device", "jax",
    "size", "n_params", "flops_per_step", "compile_s", "step_ms", "tflops", "peak_share", "temp_bytes",
    "argument_bytes", "output_bytes", "peak_bytes", "device_peak_bytes", "initial_loss", "final_loss", "baseline",
    "ratio",
)  # fmt: skip
"""The keys of every measured row, in order (a failed setting's row has `error` instead of the figures)."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="One GPT train step by precision: hand-written JAX and jaxmake Gpt.")
    parser.add_argument("--size", choices=list(SIZES), default="gpt2-small", help="the model and batch preset")
    for field in OVERRIDES:
        parser.add_argument(f"--{field.replace('_', '-')}", type=int, dest=field, help=f"override the preset's {field}")
    parser.add_argument(
        "--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS), metavar="NAME",
        help=f"the settings to run (default: all): {', '.join(SETTINGS)}",
    )  # fmt: skip
    parser.add_argument("--steps", type=int, default=20, help="timed steps per setting; the median is reported")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps after the first")
    parser.add_argument("--peak-tflops", type=float, default=790.0, help="the device's dense bf16 peak, TFLOP/s")
    parser.add_argument("--out", type=Path, help="append every row to DIR/gpu_step.jsonl, the tables to gpu_step.md")
    args = parser.parse_args(argv)
    overrides = {field: getattr(args, field) for field in OVERRIDES if getattr(args, field) is not None}
    args.spec = replace(SIZES[args.size], **overrides)
    return args


def fused_implementation(dtype: str, head_dim: int) -> AttentionPath:
    """The `implementation` the fused path takes: jaxmake's rule, which the hand-written model follows too."""
    on_cudnn = jax.default_backend() == "gpu" and dtype != "float32" and head_dim % 8 == 0 and head_dim <= 128
    return "cudnn" if on_cudnn else "xla"


def build(setting: Setting, spec: Spec) -> tuple[Built, AttentionPath]:
    """The setting's train step, and how its attention is computed."""
    attention = (
        "einsum" if setting.attention == "einsum" else fused_implementation(setting.dtype, spec.dim // spec.n_heads)
    )
    if setting.hand_written:
        return build_raw(spec, False, Compute(setting.dtype, attention)), attention
    config = replace(
        gpt_config(spec, setting.scan_unroll > 0),
        dtype=setting.dtype,
        attention_impl=setting.attention,
        remat=setting.remat,
        scan_unroll=max(setting.scan_unroll, 1),
    )
    return build_gpt(config, spec), attention


def memory_figures(compiled: jax.stages.Compiled) -> dict[str, int | None]:
    """The compiled step's `memory_analysis()` in bytes, `None` for what the backend does not report."""
    try:
        stats: Any = compiled.memory_analysis()
    except Exception:  # some backends do not implement it
        stats = None
    names = {"temp_bytes": "temp_size_in_bytes", "argument_bytes": "argument_size_in_bytes",
             "output_bytes": "output_size_in_bytes", "peak_bytes": "peak_memory_in_bytes"}  # fmt: skip
    return {key: getattr(stats, name, None) for key, name in names.items()}


def device_peak_bytes() -> int | None:
    """The device's peak bytes in use so far in this process (`None` where it keeps no count)."""
    stats = jax.devices()[0].memory_stats()
    return None if stats is None else stats.get("peak_bytes_in_use")


def measure(setting: Setting, spec: Spec, steps: int, warmup: int) -> dict[str, Any]:
    """Compile the setting's step ahead of time, run it, and time it; the setting's figures."""
    built, attention = build(setting, spec)
    tokens, targets = batch(spec)
    start = time.perf_counter()
    compiled = cast(jax.stages.Wrapped, built.step).lower(built.state, tokens, targets).compile()
    compile_s = time.perf_counter() - start
    state, loss = compiled(built.state, tokens, targets)
    initial_loss = float(loss)
    for _ in range(warmup):
        state, loss = compiled(state, tokens, targets)
    jax.block_until_ready((state, loss))
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        state, loss = compiled(state, tokens, targets)
        jax.block_until_ready((state, loss))
        times.append(time.perf_counter() - start)
    return {"attention": attention, "cudnn_in_hlo": "fmha" in (compiled.as_text() or "").lower(),
            "n_params": built.n_params, "compile_s": compile_s, "step_ms": 1e3 * statistics.median(times),
            **memory_figures(compiled), "device_peak_bytes": device_peak_bytes(),
            "initial_loss": initial_loss, "final_loss": float(loss)}  # fmt: skip


def run_setting(
    name: str, args: argparse.Namespace, common: dict[str, Any], done: list[dict[str, Any]]
) -> dict[str, Any]:
    """Measure one setting: its row, with the ratio to its baseline if `done` holds it, or its `error`."""
    setting, spec = SETTINGS[name], args.spec
    row: dict[str, Any] = {"setting": name,
                           "implementation": "hand-written" if setting.hand_written else "jaxmake Gpt",
                           "dtype": setting.dtype, "attention": setting.attention, "cudnn_in_hlo": None,
                           "remat": setting.remat, "layers": setting.layers, **common}  # fmt: skip
    try:
        row |= measure(setting, spec, args.steps, args.warmup)
    except Exception as error:  # one setting failing (cuDNN, memory) must not lose the others
        return row | {"error": f"{type(error).__name__}: {str(error)[:1000]}"}
    finally:
        gc.collect()  # the last setting's arrays and executable, before the next takes the device
    row["tflops"] = row["flops_per_step"] / row["step_ms"] / 1e9
    row["peak_share"] = row["tflops"] / args.peak_tflops
    base = next((r for r in done if r["setting"] == setting.baseline and "error" not in r), None)
    row["baseline"] = setting.baseline
    row["ratio"] = 1.0 if name == setting.baseline else None if base is None else row["step_ms"] / base["step_ms"]
    return {key: row[key] for key in ROW_KEYS}


def gib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**30:.3g}"


def tables(rows: list[dict[str, Any]], args: argparse.Namespace, common: dict[str, Any]) -> str:
    """The Markdown report: the run's header, step time and throughput, then memory."""
    spec = args.spec
    lines = [
        f"## One train step, {args.size} ({spec.n_params():,} parameters), on {common['device']}, jax {common['jax']}",
        "",
        f"{spec}; {spec.train_flops() / 1e12:.4g} TFLOP per step (matmuls, forward + backward, analytic); "
        f"median of {args.steps} steps after {args.warmup + 1}; share of a {args.peak_tflops:g} TFLOP/s peak (dense "
        "bf16) for every row, float32 ones included; ratio: ms/step over the hand-written setting of the same "
        "precision in this run.",
        "",
        "| setting | implementation | dtype | attention | remat | layers | params | compile s | ms/step | TFLOP/s | "
        "% of peak | ratio |",
        "|---|---|---|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['setting']} | **failed**: {r['error'][:200]} |" + " |" * 10)
            continue
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.3f}"
        cudnn = "" if r["attention"] != "cudnn" else " (in HLO)" if r["cudnn_in_hlo"] else " (**not in HLO**)"
        lines.append(
            f"| {r['setting']} | {r['implementation']} | {r['dtype']} | {r['attention']}{cudnn} | {r['remat']} | "
            f"{r['layers']} | {r['n_params']:,} | {r['compile_s']:.1f} | {r['step_ms']:.4g} | {r['tflops']:.3g} | "
            f"{100 * r['peak_share']:.3g} | {ratio} |"
        )
    lines += [
        "",
        "Memory of the compiled step (`memory_analysis()`, GiB; the device's peak is that of the process so far):",
        "",
        "| setting | temp | arguments | outputs | peak | device peak so far |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" not in r:
            figures = (r["temp_bytes"], r["argument_bytes"], r["output_bytes"], r["peak_bytes"], r["device_peak_bytes"])
            lines.append(f"| {r['setting']} | " + " | ".join(gib(n) for n in figures) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Measure every requested setting, print and (with `--out`) save the rows; return them."""
    args = parse_args(argv)
    device = jax.devices()[0]
    common = {
        "run": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": f"{device.platform} ({device.device_kind})",
        "jax": jax.__version__,
        "size": args.size,
        "flops_per_step": args.spec.train_flops(),
    }
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for name in [name for name in SETTINGS if name in args.settings]:
        rows.append(run_setting(name, args, common, rows))
        line = json.dumps(rows[-1])
        print(line, flush=True)
        if args.out is not None:
            with (args.out / "gpu_step.jsonl").open("a") as file:
                file.write(line + "\n")
    report = tables(rows, args, common)
    print("\n" + report)
    if args.out is not None:
        (args.out / "gpu_step.md").write_text(report + "\n")
    return rows


if __name__ == "__main__":
    sys.exit(1 if any("error" in row for row in main()) else 0)
