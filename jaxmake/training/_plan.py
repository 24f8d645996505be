"""`plan_step`: what one training step costs on each device, known before anything is allocated.

The step planned is the loop's own (`_compile_chunk`: the loss's gradient, clipping, AdamW
and the bookkeeping scalars, on the loop's optimizer state and shardings), lowered on
abstract values (`jax.ShapeDtypeStruct`s carrying their shardings) and compiled ahead of
time. XLA then says what it will cost:

* `cost_analysis()`: the FLOPs and bytes accessed of one step of the per-device program.
  XLA counts the body of a loop once, whatever its trip count: with `scan_layers=True`
  the count is that of one layer (`StepPlan.loops` says how many loops there are).
* `memory_analysis()`: the bytes of the arguments (weights, optimizer state, state and
  batch), of the outputs not written over a donated argument, and the temporaries. Their
  sum is the step's peak on a device: the loop donates weights, optimizer and state, so
  the new ones overwrite the old.
* the optimized HLO: the count of each collective (all-reduce, all-gather, ...).

The figures are those of the backend the step is compiled for (the default one): a plan
made on a CPU describes XLA's CPU program; fusion, and so the temporaries, differ on a GPU.
`measure_step` runs the compiled step for real and reads the peak it reached, to check
the plan: a device's `memory_stats()` where it keeps them (GPUs), the process's resident
high-water mark on a Linux CPU.
"""

import math
import re
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import jaxmake as jm
from jaxmake.training._config import TrainConfig
from jaxmake.training._loop import _compile_chunk, batches_sharding, check_split, optimizer_init
from jaxmake.training._optimizer import make_optimizer, make_schedule, weight_labels
from jaxmake.training._task import Batch, LossFn, StatefulLossFn, stateful_loss

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute", "collective-broadcast")
"""The collective operations counted in the optimized HLO (an asynchronous `-start`/`-done` pair counts once)."""


@dataclass(frozen=True)
class StepPlan:
    """What one compiled training step costs on each device, from XLA's own analyses.

    Args:
        batch_size: examples per step (the whole batch, over all devices).
        devices: the devices the step runs on.
        platform: their platform (`cpu`, `gpu`, `tpu`): the backend compiled for.
        weight_bytes, optimizer_bytes, state_bytes, batch_bytes: the bytes of each input
            that one device holds (its shards), from the abstract values' shardings.
        flops, bytes_accessed: `cost_analysis()` of the per-device program for one step
            (a loop's body counted once).
        argument_bytes, output_bytes, alias_bytes, temp_bytes: `memory_analysis()` per
            device; `alias_bytes` of the outputs reuse donated arguments.
        collectives: the count of each operation of `COLLECTIVES` in the optimized HLO
            (those that occur).
        loops: `while` loops in the optimized HLO (a `scan` over layers is one).
        compile_seconds: the wall time of lowering and compiling.
    """

    batch_size: int
    devices: int
    platform: str
    weight_bytes: int
    optimizer_bytes: int
    state_bytes: int
    batch_bytes: int
    flops: float
    bytes_accessed: float
    argument_bytes: int
    output_bytes: int
    alias_bytes: int
    temp_bytes: int
    collectives: Mapping[str, int]
    loops: int
    compile_seconds: float
    program: Any = field(repr=False, compare=False)
    """The compiled step, `(weights, optimizer state, state, batches [1, batch, ...], step) -> ...`."""
    init_optimizer: Any = field(repr=False, compare=False)
    """The jitted `weights -> optimizer state` the step takes."""

    @property
    def peak_bytes(self) -> int:
        """The most a device holds during the step: arguments, temporaries, and outputs not aliased."""
        return self.argument_bytes + self.temp_bytes + self.output_bytes - self.alias_bytes


def plan_step(
    loss: LossFn | StatefulLossFn,
    weights: jm.Weights,
    batch: Batch,
    config: TrainConfig,
    *,
    state: jm.Weights | None = None,
    mesh: Mesh | None = None,
    data_axis: str = "data",
) -> StepPlan:
    """Compile the training step of `train` ahead of time on abstract values; what it costs.

    Args:
        loss: a `Task`'s loss `(weights, batch, rng)`, or with `state` a `StatefulTask`'s
            `(weights, state, batch, rng)`.
        weights: the weights as `jax.ShapeDtypeStruct`s (`jm.abstract_weights`), each with
            its sharding on `mesh` if there is one (`jm.weight_shardings`).
        batch: one step's batch as `jax.ShapeDtypeStruct`s without shardings, each
            `[batch_size, ...]`; on a mesh it is split over `data_axis`, as `train` splits it.
        config: the optimizer (AdamW, with `freeze`, `learning_rate_factors` and
            `loss_scaling`) is that of `train`; the step is one step (`steps_per_call`
            is not used).
        state: the model's state as `jax.ShapeDtypeStruct`s (replicated on a mesh).
        mesh, data_axis: as for `train`.

    Raises:
        WeightsError: a `freeze` or factor pattern selects no weight.
        ShardingError: the batch cannot be split over `data_axis`.
    """
    weight_labels(config, weights)  # a pattern that selects no weight fails here, before compiling
    full_loss = cast(StatefulLossFn, loss) if state is not None else stateful_loss(cast(LossFn, loss))
    optimizer = make_optimizer(config)
    init = optimizer_init(optimizer, weights, config.loss_scaling)
    opt_state = jax.eval_shape(init, weights)
    state = _replicated(state or {}, mesh)
    batches = _batches(batch, mesh, data_axis)
    chunk, _ = _compile_chunk(full_loss, optimizer, make_schedule(config), config, mesh)
    started = time.perf_counter()
    compiled = chunk.lower(weights, opt_state, state, batches, jax.ShapeDtypeStruct((), jnp.int32)).compile()  # type: ignore[attr-defined]
    seconds = time.perf_counter() - started
    costs = compiled.cost_analysis()
    costs = costs[0] if isinstance(costs, list) else costs  # older jax: one dict per program
    memory = compiled.memory_analysis()
    hlo = compiled.as_text()
    counts = {name: len(re.findall(rf"\s{name}(?:-start)?\(", hlo)) for name in COLLECTIVES}
    return StepPlan(
        batch_size=jax.tree.leaves(batch)[0].shape[0],
        devices=1 if mesh is None else mesh.size,
        platform=jax.default_backend() if mesh is None else mesh.devices.flat[0].platform,
        weight_bytes=device_bytes(weights),
        optimizer_bytes=device_bytes(opt_state),
        state_bytes=device_bytes(state),
        batch_bytes=device_bytes(batches),
        flops=float(costs.get("flops", math.nan)),
        bytes_accessed=float(costs.get("bytes accessed", math.nan)),
        argument_bytes=int(memory.argument_size_in_bytes),
        output_bytes=int(memory.output_size_in_bytes),
        alias_bytes=int(memory.alias_size_in_bytes),
        temp_bytes=int(memory.temp_size_in_bytes),
        collectives={name: count for name, count in counts.items() if count},
        loops=len(re.findall(r"\swhile\(", hlo)),
        compile_seconds=seconds,
        program=compiled,
        init_optimizer=init,
    )


def device_bytes(tree: Any) -> int:
    """The bytes one device holds of a tree of arrays or `jax.ShapeDtypeStruct`s: each leaf's shard, or all of it."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        sharding = getattr(leaf, "sharding", None)
        shape = leaf.shape if sharding is None else sharding.shard_shape(leaf.shape)
        total += math.prod(shape) * jnp.dtype(leaf.dtype).itemsize
    return total


def measure_step(
    plan: StepPlan, weights: jm.Weights, batch: Batch, *, state: jm.Weights | None = None, mesh: Mesh | None = None
) -> int | None:
    """Run the planned step for real on `weights` and `batch`; the peak bytes it reached on a device.

    The step runs once; its inputs are donated (consumed). On a device that keeps
    `memory_stats()` (a GPU), the peak is its `peak_bytes_in_use`: since the process
    started, so it covers whatever was allocated before too. On a Linux CPU, it is the
    bytes of the step's inputs plus the rise of the process's resident high-water mark
    (`VmHWM`, reset through `/proc/self/clear_refs`) during the step, divided among the
    devices of the mesh (they share the host's memory). The step's first run is
    measured: XLA's CPU runtime may keep a program's temporaries for its next runs.

    Args:
        plan: from `plan_step`, with the same shapes and shardings as the arguments.
        weights, state: concrete arrays (`jm.make_weights(..., mesh=, rules=)`).
        batch: one step's batch, NumPy or JAX arrays `[batch_size, ...]`.
        mesh: the plan's mesh, if any.

    Returns:
        The peak in bytes, or `None` where neither way of reading it exists.
    """
    opt_state = plan.init_optimizer(weights)
    state = _replicated(state or {}, mesh)
    batches = jax.tree.map(
        lambda x, spec: jax.device_put(x[None], spec.sharding), batch, _batches(_abstract(batch), mesh, "data")
    )
    device = jax.devices()[0] if mesh is None else mesh.devices.flat[0]
    stats = device.memory_stats()
    if stats and "peak_bytes_in_use" in stats:
        jax.block_until_ready(plan.program(weights, opt_state, state, batches, jnp.int32(0)))
        return int(device.memory_stats()["peak_bytes_in_use"])
    if not sys.platform.startswith("linux"):
        return None
    inputs = device_bytes((weights, opt_state, state, batches)) * plan.devices
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_bytes("VmRSS")
    jax.block_until_ready(plan.program(weights, opt_state, state, batches, jnp.int32(0)))
    return (inputs + _status_bytes("VmHWM") - before) // plan.devices


def _status_bytes(key: str) -> int:
    """A size from `/proc/self/status` (`VmRSS`, `VmHWM`), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) * 1024
    raise OSError(f"/proc/self/status has no {key}")


def _abstract(tree: Any) -> Any:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)), tree)


def _replicated(state: jm.Weights, mesh: Mesh | None) -> jm.Weights:
    """The state (abstract or not) replicated over `mesh`, as the loop places it; as it is without a mesh."""
    if mesh is None:
        return state
    sharding = NamedSharding(mesh, PartitionSpec())
    placed: jm.Weights = jax.tree.map(
        lambda x: (
            jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
            if isinstance(x, jax.ShapeDtypeStruct)
            else jax.device_put(x, sharding)
        ),
        state,
    )
    return placed


def _batches(batch: Batch, mesh: Mesh | None, data_axis: str) -> Batch:
    """One step's abstract batch as the loop's chunk takes it: `[1, batch_size, ...]`, split over `data_axis`."""
    sharding = None
    if mesh is not None:
        sharding = batches_sharding(mesh, data_axis)
        for leaf in jax.tree.leaves(batch):
            check_split(leaf.shape[0], mesh, data_axis)
    stacked: Batch = jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct((1, *leaf.shape), leaf.dtype, sharding=sharding), batch
    )
    return stacked
