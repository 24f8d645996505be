"""The `jaxmake plan` command: one plan, or a sweep over the product of some fields' values.

A sweep checks every point first (config, contracts, layout on the mesh, batch split),
rejecting the invalid ones with their one-line error and compiling nothing for them. The
valid ones are then compiled on a pool of processes (tracing holds Python's lock, so
threads would take turns), each worker started once on the same devices and mesh. It
writes, in `--out`, one config file per valid point (`point-01.json`, which
`jaxmake train chars|digits --config` trains as is), the table (`plan.md`, `plan.json`)
and a plot of memory and FLOPs against the swept fields (`plan.png`).
"""

import concurrent.futures
import dataclasses
import itertools
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from annotated_types import Ge
from tyro.conf import Positional

import jaxmake as jm
from jaxmake.cli._configs import CliError, build_config, config_dict, json_or_string, model_class, user_error_line
from jaxmake.cli._plan import (
    DEFAULT_BATCH,
    Fit,
    Inputs,
    Planned,
    Planner,
    human_count,
    largest_batch,
    load_base,
    measured_peak,
    parse_memory,
    report_json,
    report_text,
)
from jaxmake.cli._scale import Scale
from jaxmake.cli._summary import human_bytes

SWEEP_FIELD_BATCH = "batch_size"
"""The one swept name that is not a field of the model: the batch size."""

RuleName = Literal["dp", "fsdp", "tp", "fsdp_tp"]
"""The `--rules` presets (`jaxmake.sharding.RULES`)."""

MAX_POINTS = 256
"""The most points one sweep plans."""


class Plan(jm.Config):
    """Plan a training run before paying for it: memory per device, FLOPs, collectives, and whether it fits.

    Compiles the training step of `jaxmake train` ahead of time on abstract values (no
    weight is allocated) and reports the parameters per weight group, the bytes per device
    of the weights, optimizer state and state under the sharding rules, XLA's FLOPs and
    memory (arguments, temporaries) for the step, the collectives in its optimized HLO, an
    analytic FLOPs-per-token estimate beside XLA's count, and the verdict against
    --device-memory, with the largest batch that fits. A config that breaks a contract or
    a divisibility rule stops at the first error, before any compile. The figures are
    XLA's for this machine's backend (a CPU here: temporaries differ on a GPU).

    Args:
        config: a config file (TOML or JSON with `model`, `config` and an optional `train`
            table of `TrainConfig` fields such as batch_size and freeze; a run's folder or
            its config.json works too), or a library model's name (`gpt`) with --set.
        set: field values as `FIELD=VALUE` (VALUE in JSON: `dim_model=256`, `mlp_n_hidden=[1024]`).
        batch_size: examples per step; by default the file's `train.batch_size`, else that of `jaxmake train`.
        device_memory: the memory of one device: a size (80GB, 16GiB, 512MB; GB is 10^9
            bytes, GiB 2^30) or a device: h100, h200, a100-40gb, a100-80gb, l4, rtx4090, v4,
            v5e, v5p, v6e (their HBM; JAX on a GPU takes 75% of it by default).
        sweep: plan every point of the product of fields' values, each `FIELD=V1,V2,...`
            (e.g. `--sweep dim_model=128,256,512 n_tfe_layers=2,4`); `batch_size` may be swept too.
        out: with --sweep, the folder of the point files, plan.md, plan.json and plan.png.
        json: print JSON instead of text (a sweep: instead of the Markdown table).
        fit_batch: search the largest batch that fits, by bisection on abstract compiles:
            `auto` (the default) for a single plan and not in a sweep, `on`, or `off`.
        measure: also run one real step (allocating everything) and report its measured
            peak beside the plan: a GPU's `memory_stats()`, a Linux CPU's resident high-water mark.
        workers: processes that compile a sweep's points at once (each starts JAX once);
            by default the machine's CPUs, at most 8; 1 compiles them in this process.
        mesh: plan on a mesh of devices, e.g. `data=4,model=2` (with --cpu-devices to emulate them).
        rules: how the weights are split over the mesh: dp, fsdp, tp, fsdp_tp (see `jaxmake train --help`).
        cpu_devices: make JAX see this many CPU devices, to plan a mesh on one machine.
    """

    config: Positional[str]
    set: tuple[str, ...] = ()
    batch_size: int | None = None
    device_memory: str = "80GB"
    sweep: tuple[str, ...] = ()
    out: Path = Path("plans")
    json: bool = False
    fit_batch: Literal["auto", "on", "off"] = "auto"
    measure: bool = False
    workers: int | None = None
    mesh: str | None = None
    rules: RuleName = "dp"
    cpu_devices: Annotated[int, Ge(1)] | None = None

    def validate(self) -> None:
        for name in ("batch_size", "workers"):
            if getattr(self, name) is not None and getattr(self, name) < 1:  # `Config` checks a union's type only
                raise self.error(name, "must be >= 1")
        if self.measure and self.sweep:
            raise self.error("measure", "runs the step of one plan: leave out --sweep (or plan the point alone)")

    def run(self) -> None:
        limit = parse_memory(self.device_memory)
        cls, fields, train = load_base(self.config, self.set)
        axes = parse_sweep(self.sweep, cls)
        mesh = Scale(mesh=self.mesh, rules=self.rules, cpu_devices=self.cpu_devices).start(None)
        file_batch = train.pop("batch_size", None)  # each point's batch is passed on its own
        batch = self.batch_size or file_batch or DEFAULT_BATCH[cls]
        planner = Planner(train, mesh, self.rules)
        if not axes:
            config = build_config(cls, fields, f"jaxmake plan {self.config}")
            planned = planner.plan(config, planner.check(config, batch), batch)
            fit = fit_of(planner, planned, limit) if self.fit_batch != "off" else None
            report = report_json(planned, limit, fit)
            if self.measure:
                report["measured_peak"] = measured_peak(planned, mesh, self.rules)
            print(json.dumps(report, indent=2) if self.json else report_text(report, self.device_memory))
            return
        rows = run_sweep(planner, cls, fields, batch, axes, limit, self)
        if self.json:
            print(json.dumps(rows, indent=2))
        else:
            print(markdown_table(rows, [name for name, _ in axes]))
        print(write_sweep(self.out, rows, [name for name, _ in axes], self.device_memory), file=sys.stderr)


def fit_of(planner: Planner, planned: Planned, limit: int) -> Fit:
    """The largest batch of `planned`'s config that fits `limit`, by abstract compiles."""
    multiple = 1 if planner.mesh is None else planner.mesh.shape.get("data", 1)
    config, inputs = planned.config, planned.inputs
    return largest_batch(
        lambda b: planner.plan(config, inputs, b).plan.peak_bytes,
        planned.plan.batch_size,
        planned.plan.peak_bytes,
        limit,
        multiple,
    )


def parse_sweep(items: Sequence[str], cls: type[jm.Config]) -> list[tuple[str, list[Any]]]:
    """`FIELD=V1,V2,...` items as `(field, values)`; values read as JSON where they parse (`[512],[1024]` too).

    Raises:
        CliError: a malformed item, an unknown field, a field swept twice, or more than
            `MAX_POINTS` points.
    """
    known = [f.name for f in dataclasses.fields(cls)]
    axes: list[tuple[str, list[Any]]] = []
    for item in items:
        name, equals, text = item.partition("=")
        if not equals or not name or not text:
            raise CliError(f"--sweep takes FIELD=V1,V2,..., got {item!r}")
        if name != SWEEP_FIELD_BATCH and name not in known:
            raise CliError(
                f"--sweep {item}: `{cls.__name__}` has no field {name!r}; its fields: {', '.join(known)}, "
                f"and {SWEEP_FIELD_BATCH}"
            )
        if name in (swept for swept, _ in axes):
            raise CliError(f"--sweep: {name!r} is swept twice")
        axes.append((name, [json_or_string(value) for value in _split_values(text)]))
    points = 1
    for _, values in axes:
        points *= len(values)
    if points > MAX_POINTS:
        raise CliError(f"--sweep makes {points:,} points; at most {MAX_POINTS} are planned at once")
    return axes


def _split_values(text: str) -> list[str]:
    """`text` split at the commas outside brackets and quotes: `[512],[1024,512]` is two values."""
    values, depth, quoted, start = [], 0, False, 0
    for i, char in enumerate(text):
        if char == '"':
            quoted = not quoted
        elif not quoted and char in "[{":
            depth += 1
        elif not quoted and char in "]}":
            depth -= 1
        elif not quoted and depth == 0 and char == ",":
            values.append(text[start:i])
            start = i + 1
    return [*values, text[start:]]


def run_sweep(
    planner: Planner,
    cls: type[jm.Config],
    fields: Mapping[str, Any],
    batch: int,
    axes: list[tuple[str, list[Any]]],
    limit: int,
    command: "Plan",
) -> list[dict[str, Any]]:
    """Check every point, then compile the valid ones, in parallel processes; one row per point, in order.

    A point's `seconds` are the wall time of its check and compile (and search, with
    `--fit-batch on`) where it ran.
    """
    rows: list[dict[str, Any]] = []
    jobs: list[tuple[dict[str, Any], jm.Config, Inputs, int, float]] = []
    for index, values in enumerate(itertools.product(*(values for _, values in axes)), 1):
        swept = dict(zip((name for name, _ in axes), values, strict=True))
        point_batch = swept.get(SWEEP_FIELD_BATCH, batch)
        row: dict[str, Any] = {"point": index, "swept": swept, "batch_size": point_batch}
        started = time.perf_counter()
        try:
            if type(point_batch) is not int or point_batch < 1:
                raise CliError(f"point {index}: batch_size must be an integer >= 1, got {jm.value_repr(point_batch)}")
            point_fields = {**fields, **{k: v for k, v in swept.items() if k != SWEEP_FIELD_BATCH}}
            config = build_config(cls, point_fields, f"point {index}")
            inputs = planner.check(config, point_batch)
        except jm.JaxMakeError as error:
            rows.append({**row, "status": "rejected", "error": user_error_line(error)})
            continue
        row |= {"status": "planned", "file": {"model": cls.__name__, "config": config_dict(config)}}
        row["file"]["train"] = {**planner.train, "batch_size": point_batch}
        rows.append(row)
        jobs.append((row, config, inputs, point_batch, time.perf_counter() - started))
    fit = command.fit_batch == "on"
    workers = min(command.workers or min(os.cpu_count() or 1, 8), len(jobs))
    if workers <= 1:
        for row, config, inputs, point_batch, checked in jobs:
            report, seconds = _planned_point(planner, config, inputs, point_batch, limit, fit)
            row |= {"plan": report, "seconds": checked + seconds}
        return rows
    scale: tuple[Mapping[str, Any], str | None, RuleName, int | None] = (
        planner.train,
        command.mesh,
        command.rules,
        command.cpu_devices,
    )
    spawn = multiprocessing.get_context("spawn")  # a fork would copy JAX's threads' state
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=spawn, initargs=scale, initializer=_start) as pool:
        points = [(cls.__name__, config_dict(config), point_batch, limit, fit) for _, config, _, point_batch, _ in jobs]
        for (row, *_), (report, seconds) in zip(jobs, pool.map(_plan_in_worker, points), strict=True):
            row |= {"plan": report, "seconds": seconds}
    return rows


def _planned_point(
    planner: Planner, config: jm.Config, inputs: Inputs, batch_size: int, limit: int, fit: bool
) -> tuple[dict[str, Any], float]:
    """A point's report (with the largest batch if `fit`), and the seconds it took."""
    started = time.perf_counter()
    planned = planner.plan(config, inputs, batch_size)
    report = report_json(planned, limit, fit_of(planner, planned, limit) if fit else None)
    return report, time.perf_counter() - started


_WORKER_PLANNER: list[Planner] = []
"""In a sweep's worker process: the planner its points are compiled with (set once, by `_start`)."""


def _start(train: Mapping[str, Any], mesh: str | None, rules: RuleName, cpu_devices: int | None) -> None:
    """Start a sweep's worker: JAX on the devices asked for, and its planner."""
    scale = Scale(mesh=mesh, rules=rules, cpu_devices=cpu_devices)
    _WORKER_PLANNER.append(Planner(train, scale.start(None), rules))


def _plan_in_worker(point: tuple[str, dict[str, Any], int, int, bool]) -> tuple[dict[str, Any], float]:
    """Plan one point (already checked by the parent) in a worker: its report and the seconds it took there."""
    model, fields, batch_size, limit, fit = point
    started = time.perf_counter()
    planner = _WORKER_PLANNER[0]
    config = model_class(model)(**fields)
    report, _ = _planned_point(planner, config, planner.check(config, batch_size), batch_size, limit, fit)
    return report, time.perf_counter() - started


def markdown_table(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> str:
    """The sweep as a Markdown table: one row per point, rejected points with their error."""
    head = ["#", *names, "params", "weights+opt / device", "temp / device", "peak / device", "fits", "FLOPs / step"]
    head += ["XLA / analytic", "seconds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        swept = [json.dumps(row["swept"][name]) for name in names]
        if row["status"] == "rejected":
            cells = [str(row["point"]), *swept, f"rejected: {row['error']}", *[""] * (len(head) - len(names) - 2)]
        else:
            report = row["plan"]
            memory, xla, analytic = report["bytes_per_device"], report["xla"], report["analytic"]
            ratio = "" if analytic is None else f"{xla['flops_per_token'] / analytic['flops_per_token']:.3f}"
            fits = "yes" if report["verdict"]["fits"] else "no"
            if report["verdict"]["largest_batch"] is not None:
                fits += f" (max batch {report['verdict']['largest_batch']:,})"
            cells = [
                str(row["point"]),
                *swept,
                f"{report['params']['total']:,}",
                human_bytes(memory["weights"] + memory["optimizer"]),
                human_bytes(memory["temp"]),
                human_bytes(memory["peak"]),
                fits,
                human_count(xla["flops"]),
                ratio,
                f"{row['seconds']:.1f}",
            ]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


def write_sweep(out: Path, rows: Sequence[Mapping[str, Any]], names: Sequence[str], limit_text: str) -> str:
    """Write the point files, `plan.md`, `plan.json` and `plan.png` in `out`; a line saying what was written."""
    out.mkdir(parents=True, exist_ok=True)
    width = len(str(len(rows)))
    files = 0
    for row in rows:
        if row["status"] == "planned":
            path = out / f"point-{row['point']:0{width}d}.json"
            path.write_text(json.dumps(row["file"], indent=2) + "\n")
            files += 1
    table = [{k: v for k, v in row.items() if k != "file"} for row in rows]
    (out / "plan.json").write_text(json.dumps(table, indent=2) + "\n")
    (out / "plan.md").write_text(markdown_table(rows, names) + "\n")
    plot_sweep(out / "plan.png", rows, names, limit_text)
    rejected = sum(row["status"] == "rejected" for row in rows)
    return (
        f"wrote {out}: {files} point files (train one with `jaxmake train chars|digits --config FILE`), "
        f"plan.md, plan.json, plan.png; {len(rows) - rejected} points planned, {rejected} rejected"
    )


def plot_sweep(path: Path, rows: Sequence[Mapping[str, Any]], names: Sequence[str], limit_text: str) -> None:
    """Peak memory per device and FLOPs per step against the first swept field, a line per value of the others."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first, others = names[0], names[1:]
    figure, (memory_axes, flops_axes) = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    planned = [row for row in rows if row["status"] == "planned"]
    order = {key: i for i, key in enumerate(dict.fromkeys(json.dumps(row["swept"][first]) for row in rows))}
    numeric = all(type(row["swept"][first]) in (int, float) for row in rows)  # else one tick per value, in order

    def rest(row: Mapping[str, Any]) -> str:
        return json.dumps([row["swept"][name] for name in others])

    for _, group in itertools.groupby(sorted(planned, key=rest), key=rest):
        points = sorted(group, key=lambda row: order[json.dumps(row["swept"][first])])
        label = ", ".join(f"{name}={json.dumps(points[0]['swept'][name])}" for name in others) or None
        xs = [row["swept"][first] if numeric else json.dumps(row["swept"][first]) for row in points]
        memory_axes.plot(xs, [r["plan"]["bytes_per_device"]["peak"] / 2**20 for r in points], marker="o", label=label)
        flops_axes.plot(xs, [r["plan"]["xla"]["flops"] for r in points], marker="o", label=label)
    memory_axes.set(xlabel=first, ylabel="MiB", yscale="log", title="peak memory per device (XLA)")
    flops_axes.set(xlabel=first, ylabel="FLOPs", yscale="log", title="FLOPs per training step (XLA)")
    for axes in (memory_axes, flops_axes):
        axes.grid(alpha=0.3)
        if others:
            axes.legend()
    figure.suptitle(f"jaxmake plan (device memory {limit_text})")
    figure.savefig(path, dpi=100)
    plt.close(figure)
