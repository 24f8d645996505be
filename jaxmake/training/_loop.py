"""`train`: the training loop, written out so that it can be read in one sitting.

One compiled call, `(weights, opt_state, state, batches, first) -> (weights, opt_state,
state, scalars)`, runs a chunk of up to `config.steps_per_call` steps as a `lax.scan` over
their stacked batches; `scalars` holds one float32 vector per step (loss, learning rate,
gradient norm, the task's metrics), so that reading them back costs one transfer. A chunk
ends at the next log, evaluation or checkpoint step, so those fall on chunk edges. The
vectors stay on the device between history entries (JAX runs ahead while Python prepares
the next batches). At each entry the loop fetches them all at once, checks that every loss
is finite, averages them and evaluates; at checkpoint steps it then saves. A checkpoint is
therefore never saved before every step it contains has been checked. `metrics.json` is
written at evaluation and checkpoint steps, and when the loop ends or stops.

A model with state (`StatefulTask`) has it threaded through the steps as the weights are,
but not differentiated: the loss returns the new state, and every checkpoint saves it.

Resuming is exact because everything a step uses is either in the checkpoint (weights,
optimizer state with its step count, state) or a function of the step number (the batch,
`task.batch(step)`, and the key, `fold_in(key(seed), step)`), and because a resumed run
cuts the same chunks (they start at a checkpoint step, an edge).

With `loss_scaling="dynamic"` (for float16 models, see `_loss_scale.py`), the optimizer
state the loop carries and checkpoints is a `LossScaledState`: optax's state plus the loss
scale's, so a resumed run scales exactly as the uninterrupted one. A step whose gradients
are not all finite is then not an error but skipped, inside the compiled step (weights and
optimizer state selected unchanged); the loop only stops if the loss itself is not finite,
or if the scale, halved at every skipped step, falls below 1.

With several processes (`jax.distributed`), every process runs this same loop on the same
global mesh: each computes the global batch `task.batch(step)` and puts on its own devices
only their rows of it; the scalars are kept whole on every device so that each process
reads them and stops at the same step; every process evaluates and saves (orbax writes
each array's shards from the process that holds them); only process 0 writes
`config.json` and `metrics.json` and shows progress. So `run_dir` must be one folder that
every process sees: before training, `check_shared` has process 0 write a file there
that every process must read, and every process raises `RunDirNotShared` if one cannot
(without the check, they would wait at the first checkpoint for files written elsewhere).
A process that dies mid-run is noticed by the others at their next collective, or by
JAX's heartbeat (100 s by default) wherever they wait; a run killed mid-checkpoint keeps
its previous checkpoints and resumes from the latest, as with one process.
"""

import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import numpy.typing as npt
import optax
from jax import Array
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import jaxmake as jm
from jaxmake.training._checkpoint import Checkpoints, spec_like
from jaxmake.training._config import LossScaling, TrainConfig
from jaxmake.training._loss_scale import (
    LossScaledState,
    all_finite,
    init_loss_scale,
    next_loss_scale,
    scaled_value_and_grad,
    select_tree,
)
from jaxmake.training._optimizer import make_optimizer, make_schedule, unfrozen, weight_labels
from jaxmake.training._progress import ProgressMode, make_progress
from jaxmake.training._run_dir import History, read_history, write_config, write_history
from jaxmake.training._shared import check_shared
from jaxmake.training._task import Batch, StatefulLossFn, StatefulTask, Task, as_stateful

RESERVED = ("step", "time", "loss", "lr", "grad_norm", "steps_per_s", "loss_scale", "skipped")
"""History keys that the loop writes itself; a task's metrics may not use them."""


class TrainingDiverged(jm.JaxMakeError, FloatingPointError):
    """A step's loss or gradient norm is not finite, or its loss scale fell below 1; the run stopped before saving it.

    Attributes:
        step: the step whose value is bad (1-based: the `step`-th update).
        metric: `"loss"`, `"grad_norm"` (without loss scaling) or `"loss_scale"` (with
            `loss_scaling="dynamic"`).
        value: the value seen (`nan`, `inf` or `-inf`; for `"loss_scale"`, the scale
            below 1).
    """

    def __init__(self, message: str, *, step: int, metric: str, value: float) -> None:
        super().__init__(message)
        self.step = step
        self.metric = metric
        self.value = value


@dataclass(frozen=True)
class TrainResult:
    """What `train` returns.

    Args:
        weights: the weights after the last step.
        opt_state: the optimizer state after the last step; with
            `loss_scaling="dynamic"`, a `LossScaledState` (optax's state and the loss scale).
        history: every entry of `metrics.json`, earlier sessions of a resumed run included.
        state: the model's state after the last step (`{}` for a `Task` without state).
    """

    weights: jm.Weights
    opt_state: Any
    history: History
    state: jm.Weights


def train(
    task: Task | StatefulTask,
    weights: jm.Weights,
    config: TrainConfig,
    run_dir: str | os.PathLike[str],
    *,
    state: jm.Weights | None = None,
    resume: bool = False,
    progress: ProgressMode | None = None,
    metadata: Mapping[str, Any] | None = None,
    mesh: Mesh | None = None,
    data_axis: str = "data",
) -> TrainResult:
    """Train `weights` on `task` for `config.steps` optimizer steps, checkpointing in `run_dir`.

    Step `s` (0-based) computes the loss of `task.batch(s)` with the key
    `fold_in(key(config.seed), s)`, clips the gradients and applies AdamW (see
    `make_optimizer`). A history entry is made every `config.log_every` steps and at
    every evaluation and checkpoint step; it holds `step` (updates done), `loss`,
    `grad_norm` (before clipping, of the weights not frozen) and the task's metrics
    averaged since the previous entry, `lr` (of the last step), `steps_per_s` (of the
    steps since the previous entry, compilation included the first time), `time` (wall
    seconds since the run began) and, at evaluation steps, `eval_<name>`.

    With `config.loss_scaling="dynamic"` the loss is differentiated times the loss scale
    and the gradients divided back (see `TrainConfig.loss_scaling`); a step whose
    gradients are not all finite is skipped: the weights and optimizer state stay as they
    were, and the scale halves. An entry then also holds `loss_scale` (after its last
    step: the scale the next step uses) and `skipped` (the fraction of its steps that were
    skipped), and its `grad_norm` is the mean over the steps not skipped (NaN, written
    `null`, if all were). A skipped step does not advance the optimizer's own step count,
    so after `k` skipped steps AdamW applies the learning rate of `k` steps earlier than
    the `lr` reported (that of `make_schedule` at the step).

    Args:
        task: the loss, batches and evaluation of the model; a `StatefulTask` for a model
            with state.
        weights: the initial weights (used for their structure only when resuming);
            they are copied, never modified.
        state: the initial state of a `StatefulTask` (`jm.make_state(component.state_params)`),
            required with one and refused without; used for its structure only when
            resuming, copied, never modified.
        config: the optimizer, schedule, and how often to log, evaluate and checkpoint.
        run_dir: where `config.json`, `metrics.json` and `checkpoints/` are written.
        resume: continue from the latest checkpoint in `run_dir` (start afresh if it
            has none). The resumed run repeats the uninterrupted one bit for bit, given
            the same `task`, `config` and machine.
        progress: `"bar"`, `"lines"`, `"off"`, or `None` for a bar on a terminal and
            lines otherwise.
        metadata: JSON values or dataclasses (e.g. `{"model": vit_config}`) stored in
            `config.json` with the `TrainConfig`, for whoever loads the run later.
        mesh: train on this device mesh: every batch is split along its leading axis over
            `data_axis` (data parallel), and the weights keep the shardings they come with
            (make them with `jm.make_weights(..., mesh=mesh, rules=...)` for FSDP or
            tensor parallelism); the optimizer state follows the weights' shardings, and a
            checkpoint is restored onto the shardings of `weights`, whatever mesh wrote it.
            With several processes it is required and spans the devices of all of them;
            each process then calls `train` with the same arguments, `task.batch(step)`
            must give the same global batch on every process, and `task.evaluate` is
            called on every process (its computations span them all).
        data_axis: the mesh axis that splits the batch.

    Returns:
        The final weights, optimizer state and history.

    Raises:
        TrainingDiverged: a step's loss is not finite; or, without loss scaling, its
            gradient norm; or, with it, the loss scale falls below 1 (gradients that are
            not finite at any scale). Nothing of that step or later is saved, so the
            latest checkpoint is the last good one.
        WeightsError: a pattern of `config.freeze` or `config.learning_rate_factors`
            selects no weight of `weights` (before anything is compiled); or resuming
            from a checkpoint whose weights do not match `weights`; lists every missing,
            extra and mis-shaped path.
        FileExistsError: `run_dir` already holds checkpoints and `resume` is false.
        RunDirNotShared: with several processes, `run_dir` is not one folder that all of
            them see (raised on every process, before training).
        ConfigError: resuming from a checkpoint saved with the other `loss_scaling`.
        ValueError: a metric of the task uses a name of `RESERVED`, or several processes
            train without a `mesh`.
        ArgumentError: a `StatefulTask` without `state`, or `state` with a `Task`.
    """
    if mesh is None and jax.process_count() > 1:
        raise ValueError(
            f"training on {jax.process_count()} processes needs a `mesh` over the devices of all of them "
            f"(e.g. `jaxmake.sharding.make_mesh({{'data': {jax.device_count()}}})`)"
        )
    if (state is None) == isinstance(task, StatefulTask):
        raise jm.ArgumentError(
            "`train` takes `state=` (the model's initial state, `jm.make_state(component.state_params)`) with a "
            "`StatefulTask`, and only with one"
            + ("" if state is None else f"; it was given a state holding {sorted(map(str, state))} with a `Task`")
        )
    weight_labels(config, weights)  # a freeze or factor pattern that selects no weight fails here, before compiling
    stateful = as_stateful(task)
    writes = jax.process_index() == 0  # the one process that writes the run's files and shows progress
    run_dir = Path(run_dir)
    check_shared(run_dir)  # else the first checkpoint would wait for files written elsewhere
    optimizer, schedule = make_optimizer(config), make_schedule(config)
    with Checkpoints(run_dir, keep=config.keep_checkpoints) as checkpoints:
        latest = checkpoints.latest_step()
        if latest is not None and not resume:
            raise FileExistsError(
                f"`{run_dir}` already holds checkpoints of steps {checkpoints.steps()}; pass "
                f"`resume=True` to continue that run, or choose another `run_dir`"
            )
        history: History = []
        place = _batch_placement(mesh, data_axis)
        state = _placed(state or {}, mesh)
        if latest is None:
            weights, state = jax.tree.map(_committed_copy, (weights, state))
            opt_state = _init_like(optimizer, weights, config.loss_scaling)
        else:
            weights, opt_state = _restore(checkpoints, latest, weights, optimizer, config.loss_scaling)
            state = checkpoints.restore_state(latest, state)
            history = [entry for entry in read_history(run_dir) if entry["step"] <= latest]
        if writes:
            write_config(run_dir, config, metadata)
        done = latest or 0
        chunk_fn, names = _compile_chunk(stateful.loss, optimizer, schedule, config, mesh)
        reporter = make_progress(progress if writes else "off", config.steps, done)
        began = time.perf_counter() - (history[-1]["time"] if history else 0.0)
        pending: list[Array] = []  # the scalars of the steps since the last entry, one `[steps, scalars]` per chunk
        window_began = time.perf_counter()
        try:
            while done < config.steps:
                first, done = done, _chunk_end(done, config)
                batches = _stacked([task.batch(step) for step in range(first, done)])
                weights, opt_state, state, scalars = chunk_fn(weights, opt_state, state, place(batches), first)
                pending.append(scalars)
                last = done == config.steps
                evaluate = done % config.eval_every == 0 or last
                save = done % config.checkpoint_every == 0 or last
                if not (evaluate or save or done % config.log_every == 0):
                    continue  # no entry at this step: keep the device running ahead

                values = np.concatenate(jax.device_get(pending))  # [steps since the last entry, scalars]
                _check_finite(values, names, done - len(values), config, checkpoints)
                entry = _average(values, names, done)
                entry["steps_per_s"] = len(values) / (time.perf_counter() - window_began)
                pending = []
                if evaluate and stateful.evaluate is not None:
                    evaluated = stateful.evaluate(weights, state)
                    entry |= {f"eval_{name}": float(value) for name, value in evaluated.items()}
                entry["time"] = time.perf_counter() - began
                history.append(entry)
                reporter.report(entry)
                if writes and (evaluate or save):
                    write_history(run_dir, history)
                if save:
                    checkpoints.save(done, weights, opt_state, state)
                window_began = time.perf_counter()
        finally:
            if writes:
                write_history(run_dir, history)
            reporter.close()
    return TrainResult(weights, opt_state, history, state)


_ChunkOut = tuple[jm.Weights, Any, jm.Weights, Array]
_ChunkFn = Callable[[jm.Weights, Any, jm.Weights, Batch, int], _ChunkOut]


def _chunk_end(step: int, config: TrainConfig) -> int:
    """Where the chunk starting after `step` steps ends: `steps_per_call` steps later, or at an earlier edge.

    The edges are the log, evaluation and checkpoint steps, and the last step.
    """
    edges = (config.log_every, config.eval_every, config.checkpoint_every)
    next_edge = min((step // every + 1) * every for every in edges)
    return min(step + config.steps_per_call, next_edge, config.steps)


def _stacked(batches: list[Batch]) -> Batch:
    """The batches of a chunk stacked on a new leading (step) axis."""
    stacked: Batch = jax.tree.map(lambda *arrays: np.stack(arrays), *batches)
    return stacked


def _compile_chunk(
    loss: StatefulLossFn,
    optimizer: optax.GradientTransformation,
    schedule: optax.Schedule,
    config: TrainConfig,
    mesh: Mesh | None,
) -> tuple[_ChunkFn, list[str]]:
    """The jitted chunk `(weights, opt_state, state, batches, first) -> (weights, opt_state, state, scalars)`.

    It runs one step per batch of `batches` (stacked on a leading axis), the first being
    step `first`, as a `lax.scan`. It donates the weights, optimizer state and state it
    is given (their buffers are reused). On a `mesh`, `scalars` is replicated: every
    process can read it whole. With `config.loss_scaling="dynamic"`, `opt_state` is a
    `LossScaledState` and a step whose gradients are not all finite returns the weights,
    optax's state and the state it was given.

    Returns:
        The chunk, and the names of the columns of its `scalars` (`[steps, names]`):
        `loss`, `lr`, `grad_norm`, with loss scaling `loss_scale` (after the step) and
        `skipped` (1 or 0; `grad_norm` is then NaN), then the task's metrics. The list is
        filled in when the chunk is first traced (by its first call).
    """
    names: list[str] = []
    seed, period = config.seed, config.loss_scale_period

    def update(weights: jm.Weights, opt_state: Any, grads: jm.Weights) -> tuple[jm.Weights, Any]:
        updates, opt_state = optimizer.update(grads, opt_state, weights)
        return optax.apply_updates(weights, updates), opt_state

    def step_fn(carry: tuple[jm.Weights, Any, jm.Weights], batch_and_step: tuple[Batch, Array]) -> tuple[Any, Array]:
        (weights, opt_state, state), (batch, step) = carry, batch_and_step
        rng = jr.fold_in(jr.key(seed), step)
        if config.loss_scaling == "none":
            (loss_value, (metrics, state)), grads = jax.value_and_grad(loss, has_aux=True)(weights, state, batch, rng)
            _check_metrics(metrics)
            weights, opt_state = update(weights, opt_state, grads)
            scalars = {
                "loss": loss_value,
                "lr": schedule(step),
                "grad_norm": _global_norm(unfrozen(config, grads)),
                **metrics,
            }
        else:
            scaled: LossScaledState = opt_state
            (loss_value, (metrics, new_state)), grads = scaled_value_and_grad(loss, scaled.loss_scale.scale)(
                weights, state, batch, rng
            )
            _check_metrics(metrics)
            finite = all_finite(grads)
            new_weights, new_opt_state = update(weights, scaled.optimizer, grads)
            weights, state = select_tree(finite, (new_weights, new_state), (weights, state))
            loss_scale = next_loss_scale(scaled.loss_scale, finite, period)
            opt_state = LossScaledState(select_tree(finite, new_opt_state, scaled.optimizer), loss_scale)
            scalars = {
                "loss": loss_value,
                "lr": schedule(step),
                "grad_norm": jnp.where(finite, _global_norm(unfrozen(config, grads)), jnp.nan),
                "loss_scale": loss_scale.scale,
                "skipped": jnp.where(finite, 0.0, 1.0),
                **metrics,
            }
        names[:] = scalars
        vector = jnp.stack([jnp.asarray(value, jnp.float32) for value in scalars.values()])
        return (weights, opt_state, state), vector

    def chunk_fn(weights: jm.Weights, opt_state: Any, state: jm.Weights, batches: Batch, first: Array) -> _ChunkOut:
        n_steps = jax.tree.leaves(batches)[0].shape[0]
        steps = first + jnp.arange(n_steps, dtype=jnp.int32)
        carry = (weights, opt_state, state)
        if n_steps == 1:  # outside any loop: XLA's CPU backend runs convolution gradients slowly inside one
            carry, vector = step_fn(carry, jax.tree.map(lambda x: x[0], (batches, steps)))
            scalars = vector[None]
        else:
            carry, scalars = jax.lax.scan(step_fn, carry, (batches, steps))
        weights, opt_state, state = carry
        if mesh is not None:
            scalars = jax.lax.with_sharding_constraint(scalars, NamedSharding(mesh, PartitionSpec()))
        return weights, opt_state, state, scalars

    compiled: _ChunkFn = jax.jit(chunk_fn, donate_argnums=(0, 1, 2))
    return compiled, names


def _check_metrics(metrics: Mapping[str, Any]) -> None:
    """Raise `ValueError` for a metric that shadows a history key or is not a scalar."""
    clash = sorted(set(metrics) & set(RESERVED))
    if clash:
        raise ValueError(f"the task's metrics may not be named {clash}: the loop writes {list(RESERVED)} itself")
    for name, value in metrics.items():
        if jnp.shape(value) != ():
            raise ValueError(f"the task's metric `{name}` must be a scalar, got shape {jnp.shape(value)}")


def _global_norm(tree: Any) -> Array:
    """The L2 norm of all the arrays of a tree together, in float32 (what clipping looks at)."""
    squares = (jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree))
    return jnp.sqrt(sum(squares, jnp.float32(0.0)))


def _restore(
    checkpoints: Checkpoints,
    step: int,
    weights: jm.Weights,
    optimizer: optax.GradientTransformation,
    loss_scaling: LossScaling,
) -> tuple[jm.Weights, Any]:
    """The weights and optimizer state of checkpoint `step`, checked against `weights` and `loss_scaling` first."""
    checkpoints.check(step, spec_like(weights), "the weights given to `train`")
    saved_state = checkpoints.metadata(step, "opt_state")  # a `LossScaledState` is stored as a dict of its fields
    saved = (
        "dynamic" if isinstance(saved_state, Mapping) and set(saved_state) == set(LossScaledState._fields) else "none"
    )
    if saved != loss_scaling:
        raise jm.ConfigError(
            f"`TrainConfig.loss_scaling`={loss_scaling!r} does not match the checkpoint of step {step} in "
            f"`{checkpoints.directory}`: it was saved with {saved!r} (its optimizer state holds "
            f"{'a' if saved == 'dynamic' else 'no'} loss scale); resume with `loss_scaling={saved!r}` (float16 models "
            f"train with 'dynamic', as `jaxmake train --precision f16` does), or start a new run"
        )
    # Only shapes, dtypes and shardings are used: the targets are made abstract before restoring.
    return checkpoints.restore(step, weights, _init_like(optimizer, weights, loss_scaling))


def _committed_copy(array: Any) -> Array:
    """A copy of `array` (JAX or NumPy) committed to its device(s), as the step's outputs are.

    Each step donates its weights, so the loop works on a copy of its own; were the copy
    not committed, the second step would compile the step again for the committed arrays
    that the first one returns.
    """
    array = jnp.asarray(array)
    copy: Array = jax.device_put(array, array.sharding, may_alias=False)
    return copy


def _init_like(optimizer: optax.GradientTransformation, weights: jm.Weights, loss_scaling: LossScaling) -> Any:
    """The optimizer's initial state, each moment sharded like its weight (counters left to XLA)."""
    return optimizer_init(optimizer, weights, loss_scaling)(weights)


def optimizer_init(
    optimizer: optax.GradientTransformation, weights: jm.Weights, loss_scaling: LossScaling
) -> Callable[[jm.Weights], Any]:
    """The jitted `weights -> optimizer state` the loop starts from, each moment sharded like its weight.

    `weights` may be abstract (`jax.ShapeDtypeStruct`s, with their shardings): `.eval_shape`
    of the result then gives the state's shapes and shardings without allocating it.
    Without explicit shardings the whole state would land on one device. With
    `loss_scaling="dynamic"`, the state is a `LossScaledState` holding optax's and
    `init_loss_scale()`.
    """
    abstract = jax.eval_shape(optimizer.init, weights)
    shardings = _like_weights(abstract, weights)
    if loss_scaling == "none":
        return jax.jit(optimizer.init, out_shardings=shardings)

    def init(weights: jm.Weights) -> LossScaledState:
        return LossScaledState(optimizer.init(weights), init_loss_scale())

    scale_shardings = jax.tree.map(lambda _: None, jax.eval_shape(init_loss_scale))  # scalars: left to XLA
    return jax.jit(init, out_shardings=LossScaledState(shardings, scale_shardings))


def _like_weights(abstract: Any, weights: jm.Weights) -> Any:
    """The sharding of each leaf of an optimizer state: its weight's, for a moment of a weight; else `None`.

    A moment is a leaf whose key path ends with a weight's path (`...mu['head']['w']`) and
    whose shape is that weight's. Read from the paths, this holds for any optax state,
    that of `optax.partition` too (where a group's moments hold only its own weights).
    """
    by_path = {tuple(path.split(".")): weight for path, weight in jm.flat_weights(weights).items()}

    def sharding(key_path: tuple[Any, ...], leaf: Any) -> Any:
        names: list[str] = []
        for key in reversed(key_path):
            if not isinstance(key, jax.tree_util.DictKey):
                break
            names.insert(0, str(key.key))
        weight = by_path.get(tuple(names))
        return weight.sharding if weight is not None and weight.shape == leaf.shape else None

    return jax.tree_util.tree_map_with_path(sharding, abstract)


def _placed(state: jm.Weights, mesh: Mesh | None) -> jm.Weights:
    """The state replicated over the mesh (a small tree of statistics), or as it is without one."""
    if mesh is None:
        return state
    placed: jm.Weights = jax.device_put(state, NamedSharding(mesh, PartitionSpec()))
    return placed


def _batch_placement(mesh: Mesh | None, data_axis: str) -> Callable[[Batch], Batch]:
    """Put a chunk's batches `[steps, batch, ...]` on the mesh, the batch axis split over `data_axis` (or leave them).

    Each process copies to its own devices only their rows of the (global) batch; the
    rows of other processes' devices are never read.
    """
    if mesh is None:
        return lambda batch: batch
    sharding = batches_sharding(mesh, data_axis)

    def place(batch: Batch) -> Batch:
        for array in jax.tree.leaves(batch):
            check_split(array.shape[1], mesh, data_axis)
        placed: Batch = jax.tree.map(
            lambda array: jax.make_array_from_callback(array.shape, sharding, lambda index: array[index]), batch
        )
        return placed

    return place


def batches_sharding(mesh: Mesh, data_axis: str) -> NamedSharding:
    """The sharding of a chunk's batches `[steps, batch, ...]`: the batch axis split over `data_axis`.

    Raises:
        ShardingError: the mesh has no axis `data_axis`.
    """
    if data_axis not in mesh.axis_names:
        raise jm.ShardingError(
            f"the mesh has no axis {data_axis!r} to split batches over; it has {list(mesh.axis_names)}"
        )
    return NamedSharding(mesh, PartitionSpec(None, data_axis))


def check_split(examples: int, mesh: Mesh, data_axis: str) -> None:
    """Raise `ShardingError` unless a batch of `examples` splits evenly over the mesh axis `data_axis`."""
    parts = mesh.shape[data_axis]
    if examples % parts:
        raise jm.ShardingError(
            f"a batch of {examples} examples cannot be split over mesh axis {data_axis!r} of size {parts}"
        )


def _check_finite(
    values: npt.NDArray[Any], names: list[str], first: int, config: TrainConfig, checkpoints: Checkpoints
) -> None:
    """Raise `TrainingDiverged` at the first step (of `first + 1, first + 2, ...`) with a bad value.

    Bad is a loss that is not finite; without loss scaling, a gradient norm that is not
    finite (it would poison the weights); with it, a loss scale below 1 (a skipped step's
    gradient norm is NaN by design).
    """
    loss = values[:, names.index("loss")]
    if config.loss_scaling == "none":
        bad = {"loss": ~np.isfinite(loss), "grad_norm": ~np.isfinite(values[:, names.index("grad_norm")])}
    else:
        bad = {"loss": ~np.isfinite(loss), "loss_scale": values[:, names.index("loss_scale")] < 1}
    rows = np.nonzero(np.logical_or.reduce(list(bad.values())))[0]
    if not len(rows):
        return
    row = int(rows[0])
    metric = next(metric for metric, flags in bad.items() if flags[row])
    step, value = first + row + 1, float(values[row, names.index(metric)])
    checkpoints.wait()
    latest = checkpoints.latest_step()
    kept = (
        f"the latest checkpoint is still step {latest} in `{checkpoints.directory}` (`resume=True` restarts from it)"
        if latest is not None
        else "no checkpoint was saved yet"
    )
    if metric == "loss_scale":
        raise TrainingDiverged(
            f"training diverged at step {step} of {config.steps}: the loss scale fell to {value} (below 1), "
            f"halved at every step whose gradients were not finite, the latest computed on `task.batch({step - 1})`: "
            f"they are not finite even unscaled, which loss scaling cannot fix. Nothing of this step or later was "
            f"saved; {kept}. Try a lower `learning_rate` (now {config.learning_rate}), computing in bfloat16 or "
            f"float32 rather than float16, or check that batch.",
            step=step,
            metric=metric,
            value=value,
        )
    raise TrainingDiverged(
        f"training diverged at step {step} of {config.steps}: `{metric}` is {value} "
        f"(computed on `task.batch({step - 1})`). Nothing of this step or later was "
        f"saved; {kept}. Try a lower `learning_rate` (now {config.learning_rate}) or "
        f"`clip_norm` (now {config.clip_norm}), or check that batch.",
        step=step,
        metric=metric,
        value=value,
    )


def _average(values: npt.NDArray[Any], names: list[str], step: int) -> dict[str, float]:
    """The entry of `step`: each scalar's mean over the steps since the last entry; `lr` of the last step.

    With loss scaling: `loss_scale` of the last step, `skipped` the fraction of steps
    skipped, and `grad_norm` the mean over the steps not skipped (NaN if all were).
    """
    means = values.mean(axis=0, dtype=np.float64)
    entry: dict[str, float] = {"step": step} | {name: float(mean) for name, mean in zip(names, means)}
    entry["lr"] = float(values[-1, names.index("lr")])
    if "loss_scale" in names:
        entry["loss_scale"] = float(values[-1, names.index("loss_scale")])
        applied = values[:, names.index("skipped")] == 0
        norms = values[applied, names.index("grad_norm")]
        entry["grad_norm"] = float(norms.mean(dtype=np.float64)) if len(norms) else math.nan
    return entry
