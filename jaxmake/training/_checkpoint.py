"""Checkpoints of a run, on orbax: atomic saves, keep-N, checked restores, `load_weights`.

A run keeps its checkpoints in `run_dir/checkpoints/<step>/`, each holding two items,
`weights` and `opt_state` (and a third, `state`, for a model with state), so that
inference can restore the weights alone. `<step>` is
the number of optimizer steps done. orbax writes each checkpoint into a temporary folder
and renames it when complete, so a run killed mid-save leaves the previous checkpoints
intact (the partial folder is removed the next time the run is opened).

Once a checkpoint is complete, process 0 seals it: `<step>/jaxmake_files.json` lists the
size and CRC-32 of every file in it. A checkpoint damaged later (a truncated copy, a bad
disk, a file edited by hand) is then found before orbax reads it, and the error names the
file; a failure inside orbax on an unsealed checkpoint is reported as damage too. Either
way the error is a `CheckpointDamaged`, and `load_weights` falls back to the latest
intact checkpoint, with a warning.
"""

import contextlib
import json
import os
import warnings
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import jax
import orbax.checkpoint as ocp
from jax.sharding import SingleDeviceSharding

import jaxmake as jm
from jaxmake.training._run_dir import RunDirError

CHECKPOINTS = "checkpoints"
"""The folder of a run directory that holds its checkpoints."""

_ITEMS = ("weights", "opt_state", "state")
_SEAL = "jaxmake_files.json"


class CheckpointDamaged(RunDirError):
    """A checkpoint cannot be read back: a file is missing, truncated or changed, or orbax fails on it.

    Attributes:
        step: the step of the damaged checkpoint.
    """

    def __init__(self, message: str, *, step: int) -> None:
        super().__init__(message)
        self.step = step


class Checkpoints:
    """The checkpoints of one run directory; a context manager that waits for saves on exit.

    Args:
        run_dir: the run directory; checkpoints live in `run_dir/checkpoints`.
        keep: how many of the latest checkpoints to keep (`None`: all).
        create: create the folder if it does not exist; otherwise it must exist.

    Raises:
        FileNotFoundError: `create=False` and the run has no checkpoints folder.
    """

    def __init__(self, run_dir: str | os.PathLike[str], keep: int | None = None, *, create: bool = True) -> None:
        self.directory = Path(run_dir).absolute() / CHECKPOINTS  # orbax refuses relative paths
        if not create and not self.directory.is_dir():
            raise FileNotFoundError(f"no checkpoints in `{run_dir}`: `{self.directory}` does not exist")
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=create, cleanup_tmp_directories=True)
        handlers = {name: ocp.StandardCheckpointHandler() for name in _ITEMS}
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)
        self._unsealed: list[int] = []  # saved here, not sealed yet

    def steps(self) -> list[int]:
        """The steps of the complete checkpoints on disk, oldest first."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """The step of the latest complete checkpoint, or `None` if there is none."""
        return self._manager.latest_step()

    def save(self, step: int, weights: jm.Weights, opt_state: Any, state: jm.Weights | None = None) -> None:
        """Start saving `weights`, `opt_state` and the model's `state` (if it holds arrays) as the checkpoint of `step`.

        The arrays are copied to host memory before this returns (so the caller may
        donate them to the next step); the files are written in the background and
        committed atomically. Only the `keep` latest checkpoints stay.

        Raises:
            ValueError: `weights` or `opt_state` holds no array (orbax cannot save that).
        """
        for name, tree in (("weights", weights), ("opt_state", opt_state)):
            if not jax.tree.leaves(tree):
                raise ValueError(f"cannot checkpoint step {step}: `{name}` holds no array")
        items = {"weights": weights, "opt_state": opt_state}
        if jax.tree.leaves(state):
            items["state"] = state
        self._seal_saved()
        self._unsealed.append(step)
        self._manager.save(
            step, args=ocp.args.Composite(**{name: ocp.args.StandardSave(tree) for name, tree in items.items()})
        )

    def check(self, step: int, expected: jm.WeightParamsTree, what: str) -> None:
        """Check that the weights stored at `step` have exactly the paths, shapes and dtypes of `expected`.

        Reads only the checkpoint's metadata, not its arrays.

        Args:
            step: a step listed by `steps`.
            expected: the spec the stored weights must match.
            what: names `expected` in the message, e.g. "the weights given to `train`".

        Raises:
            CheckpointDamaged: a file of the checkpoint is missing, truncated or changed
                since it was sealed, or orbax cannot read its metadata.
            WeightsError: listing every path missing from the checkpoint, every extra
                one, and every shape or dtype that differs (expected vs stored).
        """
        stored = self.metadata(step, "weights")
        try:
            jm.check_weights(expected, stored)
        except jm.WeightsError as error:
            _, _, problems = str(error).partition("\n")
            raise jm.WeightsError(
                f"the checkpoint of step {step} in `{self.directory}` does not match {what} "
                f"(`missing`: not in the checkpoint; `extra`: only in the checkpoint; `expected`: "
                f"{what}; `got`: the checkpoint):\n{problems or error}"
            ) from None

    def metadata(self, step: int, item: str) -> Any:
        """The tree of array metadata (shape, dtype) of `item` (`"weights"` or `"opt_state"`) saved at `step`.

        Reads only the checkpoint's metadata, not its arrays. orbax stores a NamedTuple
        (such as an optax state) as a dict of its fields, a tuple as a list.

        Raises:
            CheckpointDamaged: a file of the checkpoint is missing, truncated or changed
                since it was sealed, or orbax cannot read its metadata.
        """
        self._check_intact(step)
        with self._reading(step):
            metadata = self._manager.item_metadata(step)[item]
        return getattr(metadata, "tree", metadata)  # orbax 0.12 wraps the tree in `TreeMetadata`

    def restore(self, step: int, weights: Any, opt_state: Any | None = None) -> tuple[jm.Weights, Any]:
        """Restore the checkpoint of `step` into the structure of the given targets.

        Args:
            step: a step listed by `steps`.
            weights: the target weights tree: arrays or `jax.ShapeDtypeStruct`s (check
                it first with `check`).
            opt_state: the target optimizer state, e.g. `jax.eval_shape(optimizer.init,
                weights)`; `None` restores the weights only.

        Returns:
            `(weights, opt_state)` as arrays (`opt_state` is `None` if not asked for).

        Raises:
            CheckpointDamaged: orbax fails to read the checkpoint's files.
        """
        items = {"weights": ocp.args.StandardRestore(_abstract(weights))}
        if opt_state is not None:
            items["opt_state"] = ocp.args.StandardRestore(_abstract(opt_state))
        with self._reading(step):
            restored = self._manager.restore(step, args=ocp.args.Composite(**items))
        restored_weights: jm.Weights = restored["weights"]
        return restored_weights, restored["opt_state"] if opt_state is not None else None

    def restore_state(self, step: int, state: jm.Weights) -> jm.Weights:
        """The model's state saved at `step`, restored into the structure of `state` (`{}` stays `{}`).

        Raises:
            WeightsError: the checkpoint's state does not match `state` (or it holds none
                and `state` holds arrays); lists every missing, extra and mis-shaped path.
            CheckpointDamaged: orbax fails to read the checkpoint's files.
        """
        self._check_intact(step)
        with self._reading(step):
            saved = self._manager.item_metadata(step).get("state")
        stored = getattr(saved, "tree", saved) or {}
        try:
            jm.check_weights(spec_like(state), stored)
        except jm.WeightsError as error:
            _, _, problems = str(error).partition("\n")
            raise jm.WeightsError(
                f"the state in the checkpoint of step {step} in `{self.directory}` does not match the state given "
                f"(`missing`: not in the checkpoint; `extra`: only in the checkpoint):\n{problems or error}"
            ) from None
        if not jax.tree.leaves(state):
            return state
        with self._reading(step):
            restored = self._manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(_abstract(state)))
            )
        restored_state: jm.Weights = restored["state"]
        return restored_state

    def wait(self) -> None:
        """Block until every save started so far is written, committed and sealed."""
        self._seal_saved()

    def close(self) -> None:
        """Wait for pending saves and seal them (`wait`), then release orbax's resources."""
        self.wait()
        self._manager.close()

    def damage(self, step: int) -> str | None:
        """What is wrong with the files of checkpoint `step`, or `None` if they are as sealed (or it is not sealed)."""
        folder = self.directory / str(step)
        seal = folder / _SEAL
        if not seal.is_file():
            return None
        try:
            sealed: dict[str, list[int]] = json.loads(seal.read_text())["files"]
        except (OSError, ValueError, KeyError, TypeError):
            return f"its list of files `{seal}` is damaged"
        for name, (size, crc) in sealed.items():
            path = folder / name
            if not path.is_file():
                return f"`{path}` is missing"
            if path.stat().st_size != size:
                return f"`{path}` holds {path.stat().st_size:,} bytes where {size:,} were written"
            if _crc32(path) != crc:
                return f"`{path}` has changed since it was written"
        return None

    def _check_intact(self, step: int) -> None:
        """Raise `CheckpointDamaged` if `damage(step)` finds a problem."""
        problem = self.damage(step)
        if problem is not None:
            raise self._damaged(step, problem)

    @contextlib.contextmanager
    def _reading(self, step: int) -> Iterator[None]:
        """Turn any failure of orbax reading checkpoint `step` into `CheckpointDamaged` (its message cut short)."""
        try:
            yield
        except Exception as error:
            reason = " ".join(str(error).split())[:300] or type(error).__name__
            raise self._damaged(step, f"orbax cannot read it: {type(error).__name__}: {reason}") from error

    def _damaged(self, step: int, problem: str) -> CheckpointDamaged:
        earlier = [s for s in self.steps() if s < step]
        folder = self.directory / str(step)
        advice = (
            f"delete or move `{folder}` to use the previous checkpoint (step {earlier[-1]})"
            if earlier
            else f"there is no earlier checkpoint: delete `{folder}` and train again"
        )
        return CheckpointDamaged(f"the checkpoint of step {step} is damaged: {problem}; {advice}", step=step)

    def _seal_saved(self) -> None:
        """Wait for the saves in progress, then (on process 0) seal the checkpoints saved here.

        `save` calls it first: orbax would wait there for the previous save anyway.
        """
        self._manager.wait_until_finished()
        unsealed, self._unsealed = self._unsealed, []
        if jax.process_index() != 0:
            return
        for step in unsealed:
            folder = self.directory / str(step)
            try:
                files = {
                    str(path.relative_to(folder)): [path.stat().st_size, _crc32(path)]
                    for path in sorted(folder.rglob("*"))
                    if path.is_file()
                }
                partial = folder / (_SEAL + ".partial")
                partial.write_text(json.dumps({"files": files}))
                os.replace(partial, folder / _SEAL)
            except FileNotFoundError:  # keep-N removed it meanwhile (orbax does so in the background)
                continue

    def __enter__(self) -> "Checkpoints":
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc_value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def spec_like(weights: Mapping[str, Any]) -> dict[str, Any]:
    """A weight spec with the paths, shapes and dtypes of a weights tree (for `check_weights`)."""
    return {
        name: spec_like(value)
        if isinstance(value, Mapping)
        else jm.WeightParams(tuple(value.shape), init="zeros", dtype=value.dtype)
        for name, value in weights.items()
    }


def _abstract(tree: Any) -> Any:
    """Arrays as `jax.ShapeDtypeStruct`s (their sharding kept); abstract leaves as they are."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree)


def load_weights(
    run_dir: str | os.PathLike[str], weight_params: jm.WeightParamsTree, *, step: int | None = None
) -> jm.Weights:
    """The weights of a run's latest checkpoint (or of `step`), for inference.

    Only the `weights` item is read; the optimizer state stays on disk. The weights are
    restored whole onto this process's first device, whatever mesh (and however many
    processes) saved them. Without `step`, a damaged latest checkpoint is skipped with a
    warning (naming it and the damage) for the latest intact one.

    Args:
        run_dir: the run directory given to `train`.
        weight_params: the spec of the model's weights (`component.weight_params`).
        step: which checkpoint; `None` is the latest.

    Returns:
        The weights tree, with exactly the keys, shapes and dtypes of `weight_params`.

    Raises:
        FileNotFoundError: the run has no checkpoint (of `step`, if given).
        CheckpointDamaged: the checkpoint of `step` is damaged, or (without `step`) every
            checkpoint is.
        WeightsError: the checkpoint's weights do not match `weight_params`; lists
            every missing, extra and mis-shaped path.
    """
    with Checkpoints(run_dir, create=False) as checkpoints:
        steps = checkpoints.steps()
        if step is not None and step not in steps:
            listed = ", ".join(map(str, steps)) or "none"
            raise FileNotFoundError(f"`{checkpoints.directory}` has no checkpoint of step {step}; its steps: {listed}")
        if not steps:
            raise FileNotFoundError(f"`{checkpoints.directory}` has no checkpoint")
        device = SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), jm.abstract_weights(weight_params)
        )
        for candidate in [step] if step is not None else reversed(steps):
            try:
                checkpoints.check(candidate, weight_params, "the weight spec")
                weights, _ = checkpoints.restore(candidate, target)
            except CheckpointDamaged as damaged:
                if step is not None:
                    raise
                if candidate == steps[0]:
                    raise CheckpointDamaged(
                        f"every checkpoint in `{checkpoints.directory}` is damaged (steps "
                        f"{', '.join(map(str, steps))}): train the run again; the oldest: {damaged}",
                        step=candidate,
                    ) from damaged
                warnings.warn(f"{damaged}; reading step {steps[steps.index(candidate) - 1]} instead", stacklevel=2)
                continue
            return weights
    raise AssertionError("unreachable: the loop returns or raises")


def _crc32(path: Path) -> int:
    """The CRC-32 of a file's bytes, read in chunks of 1 MiB."""
    crc = 0
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            crc = zlib.crc32(chunk, crc)
    return crc
