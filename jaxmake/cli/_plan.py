"""`jaxmake plan`: what a training run costs per device, and whether it fits, before paying for it.

A plan reads a config (a file, or a library model with `--set`), makes the component (its
contracts are checked there), lays the weights out on the mesh (their divisibility is
checked there), and compiles the training step of `jaxmake train` ahead of time on
abstract values (`jaxmake.training.plan_step`): nothing of the weights is allocated. A
config that breaks a rule stops at the first error, in one line, before any compile.

Only the models `jaxmake train` trains have a training step to plan: `Gpt` (next-token
loss on `[batch, n_ctx]` tokens, as `train chars`), `Vit` and `ResNet` (classification of
`[batch, *hwc]` images, as `train digits`).
"""

import itertools
import json
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

import jaxmake as jm
from jaxmake import training
from jaxmake.cli._configs import (
    CliError,
    build_config,
    config_dict,
    file_batch_size,
    load_model_config,
    model_class,
    parse_set,
    train_table,
)
from jaxmake.cli._scale import check_batch
from jaxmake.cli._summary import human_bytes
from jaxmake.cli._tasks import gpt_loss, resnet_loss, vit_loss
from jaxmake.components import Gpt, ResNet, Vit
from jaxmake.sharding import RULES

PLANNED: tuple[type[jm.Config], ...] = (Gpt, Vit, ResNet)
"""The models whose training step `jaxmake plan` compiles: those `jaxmake train` trains."""

DEFAULT_BATCH = {Gpt: 32, Vit: 64, ResNet: 64}
"""The batch size planned when neither `--batch-size` nor the file sets one: `jaxmake train`'s default."""

DEVICE_PRESETS: dict[str, int] = {
    "h100": 80 * 2**30,
    "h200": 141 * 10**9,
    "a100-40gb": 40 * 2**30,
    "a100-80gb": 80 * 2**30,
    "l4": 24 * 2**30,
    "rtx4090": 24 * 2**30,
    "v4": 32 * 2**30,
    "v5e": 16 * 2**30,
    "v5p": 95 * 2**30,
    "v6e": 32 * 2**30,
}
"""The memory of one device of each named accelerator, in bytes (as sold: HBM capacity)."""

_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}

MAX_BATCH = 1 << 24
"""The largest batch the search for the largest batch that fits tries."""


def parse_memory(text: str) -> int:
    """Bytes from `80GB`, `16GiB`, `512MB`, `1e9` or a preset name (`h100`); GB is 10^9 bytes, GiB 2^30.

    Raises:
        CliError: neither a size nor a preset.
    """
    preset = DEVICE_PRESETS.get(text.strip().casefold())
    if preset is not None:
        return preset
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kmgt]i?)?b?\s*", text.casefold())
    if match is None or float(match[1]) <= 0:
        raise CliError(
            f"--device-memory takes a size such as 80GB, 16GiB or 512MB, or a device: "
            f"{', '.join(DEVICE_PRESETS)}; got {text!r}"
        )
    return int(float(match[1]) * _UNITS[match[2] or ""])


def human_count(n: float) -> str:
    """`n` with a decimal prefix: `28.3 G`."""
    power = min(max(int(math.log10(max(abs(n), 1)) // 3), 0), 5)
    return f"{n / 1000**power:.3g} {('', 'k', 'M', 'G', 'T', 'P')[power]}".rstrip()


class Inputs(NamedTuple):
    """What the training step of a model takes: its loss, the spec of its weights and state, an example's arrays."""

    loss: training.LossFn | training.StatefulLossFn
    weight_params: jm.WeightParamsTree
    state_params: jm.WeightParamsTree | None
    example: dict[str, jax.ShapeDtypeStruct]
    """One example of the batch (`{"inputs": int [n_ctx], ...}`)."""
    tokens: int | None
    """Tokens per example (`n_ctx` for a `Gpt`), for FLOPs per token; `None` for an image."""

    def batch(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
        """A batch of `batch_size` examples, abstract."""
        return {name: jax.ShapeDtypeStruct((batch_size, *x.shape), x.dtype) for name, x in self.example.items()}


def step_inputs(config: jm.Config) -> Inputs:
    """The training step's inputs for a `Gpt`, `Vit` or `ResNet` config; makes the component (checks its contracts).

    Raises:
        CliError: another model.
        ShapeError, ConfigError: the component cannot be made.
    """
    if isinstance(config, Gpt):
        gpt = Gpt.make(config)
        tokens = jax.ShapeDtypeStruct((config.n_ctx,), jnp.int32)
        return Inputs(gpt_loss(gpt), gpt.weight_params, None, {"inputs": tokens, "targets": tokens}, config.n_ctx)
    if isinstance(config, Vit | ResNet):
        example = {"x": jax.ShapeDtypeStruct(config.hwc, jnp.float32), "y": jax.ShapeDtypeStruct((), jnp.int32)}
        if isinstance(config, Vit):
            vit = Vit.make(config)
            return Inputs(vit_loss(vit), vit.weight_params, None, example, None)
        resnet = ResNet.make(config)
        loss = resnet_loss(resnet, config.axis_name)
        return Inputs(loss, resnet.weight_params, resnet.state_params, example, None)
    raise _no_training_step(type(config))


def _no_training_step(cls: type[jm.Config]) -> CliError:
    return CliError(
        f"`jaxmake plan` plans the training step of a model `jaxmake train` trains "
        f"({', '.join(planned.__name__ for planned in PLANNED)}); {cls.__name__} has none"
    )


def analytic_flops(config: jm.Config) -> tuple[float, str] | None:
    """The training FLOPs per token of a `Gpt` by the usual formula, and the formula; `None` for other models.

    `6 N + 12 L T d`: a forward pass costs 2 FLOPs per weight of a matrix applied to the
    token (`N`: attention `4 d^2` and the MLP per layer, the head `d V`) and `4 T d` per
    layer for attention's scores and weighted sum over the `T = n_ctx` positions (XLA
    computes the whole `T x T` square, masked or not); the backward pass costs twice the
    forward. Rematerialisation's recomputation is not counted (the model's FLOPs, not
    the hardware's).
    """
    if not isinstance(config, Gpt):
        return None
    d, n_layers, widths = (
        config.dim_model,
        config.n_tfe_layers,
        (config.dim_model, *config.mlp_n_hidden, config.dim_model),
    )
    vocab = -(-config.vocab_size // config.vocab_multiple) * config.vocab_multiple
    matrices = n_layers * (4 * d * d + sum(a * b for a, b in itertools.pairwise(widths))) + d * vocab
    return 6 * matrices + 12 * n_layers * config.n_ctx * d, "6 N + 12 L T d"


class Planned(NamedTuple):
    """One planned point: the config, its inputs and the compiled step's plan."""

    config: jm.Config
    inputs: Inputs
    plan: training.StepPlan


def params_by_group(weight_params: jm.WeightParamsTree) -> dict[str, int]:
    """The parameter count of each top-level weight group (`embedding`, `encoder`, ...)."""
    groups: dict[str, int] = {}
    for path, spec in jm.flat_weights(weight_params).items():
        group = path.split(".")[0]
        groups[group] = groups.get(group, 0) + math.prod(spec.shape)
    return groups


class Planner(NamedTuple):
    """How every point of a plan is compiled: the `train` table's options, the mesh and its rules."""

    train: Mapping[str, Any]
    mesh: Mesh | None
    rules: str

    def check(self, config: jm.Config, batch_size: int) -> Inputs:
        """All but the compile: the component (its contracts), the weights' layout, the batch's split, the options.

        Raises:
            CliError, ConfigError, ShapeError, ShardingError, WeightsError: the first rule broken.
        """
        inputs = step_inputs(config)
        weights = self._weights(inputs)
        if self.mesh is not None:
            check_batch(self.mesh, batch_size)
        training.weight_labels(self._train_config(config, batch_size), weights)
        return inputs

    def plan(self, config: jm.Config, inputs: Inputs, batch_size: int) -> Planned:
        """Compile the step of `batch_size` examples on abstract values (after `check`)."""
        state = None if inputs.state_params is None else jm.abstract_weights(inputs.state_params)
        plan = training.plan_step(
            inputs.loss,
            self._weights(inputs),
            inputs.batch(batch_size),
            self._train_config(config, batch_size),
            state=state,
            mesh=self.mesh,
        )
        return Planned(config, inputs, plan)

    def _weights(self, inputs: Inputs) -> jm.Weights:
        """The abstract weights, each with its sharding on the mesh (`ShardingError` if a dim does not divide)."""
        weights = jm.abstract_weights(inputs.weight_params)
        if self.mesh is None:
            return weights
        shardings = jm.weight_shardings(inputs.weight_params, self.mesh, RULES[self.rules])
        laid_out: jm.Weights = jax.tree.map(
            lambda w, s: jax.ShapeDtypeStruct(w.shape, w.dtype, sharding=s), weights, shardings
        )
        return laid_out

    def _train_config(self, config: jm.Config, batch_size: int) -> training.TrainConfig:
        """The `TrainConfig` of the `train` table (loss scaling for float16 by default, as `jaxmake train`)."""
        scaling = "dynamic" if getattr(config, "dtype", "float32") == "float16" else "none"
        fields = {"steps": 1, "loss_scaling": scaling, **self.train, "batch_size": batch_size}
        return build_config(training.TrainConfig, fields, "the config file's `train` table")


class Fit(NamedTuple):
    """The largest batch whose step fits the device memory (`None`: not even the smallest), and the compiles spent."""

    batch: int | None
    compiles: int
    capped: bool
    """The search stopped at `MAX_BATCH`, which fits: larger ones may too."""


def largest_batch(peak_of: Callable[[int], int], first: int, first_peak: int, limit: int, multiple: int) -> Fit:
    """The largest multiple of `multiple` whose peak `peak_of(batch)` is at most `limit`, by bisection.

    A step's memory grows about linearly with its batch, so each guess is the line through
    the two nearest points tried, kept inside the bracket; a guess that does not halve
    the bracket is followed by a plain halving, so the search takes at most about twice
    the compiles of a bisection, and usually 2 to 4.
    """
    known = {0: 0, first: first_peak}
    lo = first if first_peak <= limit else 0  # the largest batch known to fit (0: none yet)
    hi = None if first_peak <= limit else first  # the smallest known not to fit
    compiles, halve = 0, False
    while hi is None or hi - lo > multiple:
        if lo >= MAX_BATCH:
            return Fit(lo, compiles, True)
        near = sorted(known, key=lambda b: abs(b - lo))[:2] if hi is None else [lo, hi]
        (b0, b1), guess = sorted(near), 0
        slope = (known[b1] - known[b0]) / (b1 - b0) if b1 != b0 else 0.0
        if slope > 0:
            guess = int(b0 + (limit - known[b0]) / slope)
        if halve or slope <= 0:
            guess = (lo + hi) // 2 if hi is not None else 2 * lo
        upper = MAX_BATCH if hi is None else hi - multiple
        guess = max(lo + multiple, min(guess // multiple * multiple, upper))
        width = None if hi is None else hi - lo
        known[guess] = peak_of(guess)
        compiles += 1
        if known[guess] <= limit:
            lo = guess
        else:
            hi = guess
        halve = width is not None and hi is not None and hi - lo > width // 2
    return Fit(lo or None, compiles, False)


def load_base(source: str, sets: tuple[str, ...]) -> tuple[type[jm.Config], dict[str, Any], dict[str, Any]]:
    """The model class, its fields and the `train` table of a config file or a model name, with `--set` applied.

    A file is anything that exists, or whose name ends in `.toml` or `.json`; a folder
    is a training run's, whose `config.json` is read. The file's `train.batch_size`, if
    any, is checked to be an integer >= 1.

    Raises:
        CliError: the file cannot be read or is invalid, or the model is not one
            `jaxmake train` trains (before its fields are checked).
    """
    path = Path(source)
    if path.is_dir():
        path = path / "config.json"
    if path.exists() or path.suffix in (".toml", ".json"):
        cls, config, extra = load_model_config(path, frozenset({"train", "task", "metadata"}))
        fields, train = config_dict(config), train_table(path, extra)
        file_batch_size(path, train)
    else:
        cls, fields, train = model_class(source), {}, {}
    if cls not in PLANNED:
        raise _no_training_step(cls)
    return cls, {**fields, **parse_set(sets, "--set")}, train


def report_json(planned: Planned, limit: int, fit: Fit | None) -> dict[str, Any]:
    """A plan as JSON: the config, parameters, bytes per device, XLA's figures, the analytic FLOPs, the verdict."""
    plan, config = planned.plan, planned.config
    analytic = analytic_flops(config)
    params = params_by_group(planned.inputs.weight_params)
    flops, tokens = plan.flops * plan.devices, planned.inputs.tokens
    return {
        "model": type(config).__name__,
        "config": config_dict(config),
        "batch_size": plan.batch_size,
        "devices": plan.devices,
        "platform": plan.platform,
        "params": {"total": sum(params.values()), "groups": params},
        "bytes_per_device": {
            "weights": plan.weight_bytes,
            "optimizer": plan.optimizer_bytes,
            "state": plan.state_bytes,
            "batch": plan.batch_bytes,
            "arguments": plan.argument_bytes,
            "temp": plan.temp_bytes,
            "outputs_not_aliased": plan.output_bytes - plan.alias_bytes,
            "peak": plan.peak_bytes,
        },
        "xla": {
            "flops_per_device": plan.flops,
            "flops": flops,
            "flops_per_example": flops / plan.batch_size,
            "flops_per_token": None if tokens is None else flops / plan.batch_size / tokens,
            "bytes_accessed_per_device": plan.bytes_accessed,
            "collectives": dict(plan.collectives),
            "loops": plan.loops,
            "compile_seconds": plan.compile_seconds,
        },
        "analytic": None if analytic is None else {"flops_per_token": analytic[0], "formula": analytic[1]},
        "verdict": {
            "device_memory": limit,
            "fits": plan.peak_bytes <= limit,
            "largest_batch": None if fit is None else fit.batch,
            "largest_batch_capped": None if fit is None else fit.capped,
            "search_compiles": None if fit is None else fit.compiles,
        },
    }


def report_text(report: Mapping[str, Any], limit_text: str) -> str:
    """A plan's JSON report as lines for a terminal."""
    memory, xla, verdict = report["bytes_per_device"], report["xla"], report["verdict"]
    params = report["params"]
    devices = report["devices"]
    lines = [
        f"plan of {report['model']} ({_fields_line(report['model'], report['config'])})",
        f"batch {report['batch_size']:,} on {devices} {report['platform']} device{'s' * (devices > 1)}",
        f"parameters: {params['total']:,}",
        *(f"  {group:<24} {count:>14,}" for group, count in params["groups"].items()),
        "per device: "
        + ", ".join(f"{name} {human_bytes(memory[name])}" for name in ("weights", "optimizer", "state", "batch")),
        f"train step, compiled ahead of time for {report['platform']} in {xla['compile_seconds']:.1f} s:",
        f"  memory per device: arguments {human_bytes(memory['arguments'])} + temporaries "
        f"{human_bytes(memory['temp'])} + outputs not donated {human_bytes(memory['outputs_not_aliased'])}"
        f" = peak {human_bytes(memory['peak'])}",
        f"  FLOPs (XLA): {human_count(xla['flops'])} per step, "
        + (
            f"{human_count(xla['flops_per_example'])} per example"
            if xla["flops_per_token"] is None
            else f"{human_count(xla['flops_per_token'])} per token"
        )
        + (f" ({human_count(xla['flops_per_device'])} per device)" if devices > 1 else "")
        + (f"; XLA counts a loop's body once ({xla['loops']} loops)" if xla["loops"] else ""),
    ]
    analytic = report["analytic"]
    if analytic is not None:
        ratio = xla["flops_per_token"] / analytic["flops_per_token"]
        lines.append(
            f"  FLOPs (analytic, {analytic['formula']}): {human_count(analytic['flops_per_token'])} per token; "
            f"XLA / analytic = {ratio:.3f}"
        )
    lines.append(f"  bytes accessed (XLA): {human_bytes(xla['bytes_accessed_per_device'])} per device")
    collectives = ", ".join(f"{name} {count}" for name, count in xla["collectives"].items()) or "none"
    lines.append(f"  collectives: {collectives}")
    share = memory["peak"] / verdict["device_memory"]
    fits = "fits" if verdict["fits"] else "does NOT fit"
    line = f"verdict: {fits} in {limit_text} ({human_bytes(verdict['device_memory'])}; {share:.2%} used)"
    if verdict["largest_batch"] is not None:
        more = " or more" if verdict["largest_batch_capped"] else ""
        line += f"; largest batch that fits: {verdict['largest_batch']:,}{more}"
        line += f" (found in {verdict['search_compiles']} abstract compiles)"
    elif verdict["search_compiles"] is not None:
        line += "; no batch fits, not even the smallest"
    lines.append(line)
    measured = report.get("measured_peak")
    if measured is not None:
        lines.append(
            f"measured: one real step peaked at {human_bytes(measured)} per device "
            f"(planned {human_bytes(memory['peak'])}; measured / planned = {measured / memory['peak']:.3f})"
        )
    return "\n".join(lines)


def _fields_line(model: str, fields: Mapping[str, Any]) -> str:
    """The fields that differ from the model's defaults, as `name=value`; `defaults` if none does."""
    defaults = config_dict(model_class(model)())  # the planned models have a default for every field
    changed = {name: value for name, value in fields.items() if defaults.get(name) != value}
    return ", ".join(f"{name}={json.dumps(value)}" for name, value in changed.items()) or "defaults"


def measured_peak(planned: Planned, mesh: Mesh | None, rules: str) -> int | None:
    """Allocate the step's inputs for real (random weights, a batch of zeros); its measured peak per device."""
    inputs, plan = planned.inputs, planned.plan
    weights = jm.make_weights(
        jax.random.key(0), inputs.weight_params, mesh=mesh, rules=None if mesh is None else RULES[rules]
    )
    batch = {name: jnp.zeros(x.shape, x.dtype) for name, x in inputs.batch(plan.batch_size).items()}
    state = None if inputs.state_params is None else jm.make_state(inputs.state_params)
    return training.measure_step(plan, weights, batch, state=state, mesh=mesh)
