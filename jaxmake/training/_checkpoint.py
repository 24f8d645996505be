"""Checkpoints of a run, on orbax: atomic saves, keep-N, checked restores, `load_weights`.

A run keeps its checkpoints in `run_dir/checkpoints/<step>/`, each holding two items,
`weights` and `opt_state`, so that inference can restore the weights alone. `<step>` is
the number of optimizer steps done. orbax writes each checkpoint into a temporary folder
and renames it when complete, so a run killed mid-save leaves the previous checkpoints
intact (the partial folder is removed the next time the run is opened).
"""

import os
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import jax
import orbax.checkpoint as ocp
from jax.sharding import SingleDeviceSharding

import jaxmake as jm

CHECKPOINTS = "checkpoints"
"""The folder of a run directory that holds its checkpoints."""

_ITEMS = ("weights", "opt_state")


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

    def steps(self) -> list[int]:
        """The steps of the complete checkpoints on disk, oldest first."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """The step of the latest complete checkpoint, or `None` if there is none."""
        return self._manager.latest_step()

    def save(self, step: int, weights: jm.Weights, opt_state: Any) -> None:
        """Start saving `weights` and `opt_state` as the checkpoint of `step`.

        The arrays are copied to host memory before this returns (so the caller may
        donate them to the next step); the files are written in the background and
        committed atomically. Only the `keep` latest checkpoints stay.

        Raises:
            ValueError: `weights` or `opt_state` holds no array (orbax cannot save that).
        """
        for name, tree in (("weights", weights), ("opt_state", opt_state)):
            if not jax.tree.leaves(tree):
                raise ValueError(f"cannot checkpoint step {step}: `{name}` holds no array")
        self._manager.save(
            step,
            args=ocp.args.Composite(weights=ocp.args.StandardSave(weights), opt_state=ocp.args.StandardSave(opt_state)),
        )

    def check(self, step: int, expected: jm.WeightParamsTree, what: str) -> None:
        """Check that the weights stored at `step` have exactly the paths, shapes and dtypes of `expected`.

        Reads only the checkpoint's metadata, not its arrays.

        Args:
            step: a step listed by `steps`.
            expected: the spec the stored weights must match.
            what: names `expected` in the message, e.g. "the weights given to `train`".

        Raises:
            WeightsError: listing every path missing from the checkpoint, every extra
                one, and every shape or dtype that differs (expected vs stored).
        """
        metadata = self._manager.item_metadata(step)["weights"]
        stored = getattr(metadata, "tree", metadata)  # orbax 0.12 wraps the tree in `TreeMetadata`
        try:
            jm.check_weights(expected, stored)
        except jm.WeightsError as error:
            _, _, problems = str(error).partition("\n")
            raise jm.WeightsError(
                f"the checkpoint of step {step} in `{self.directory}` does not match {what} "
                f"(`missing`: not in the checkpoint; `extra`: only in the checkpoint; `expected`: "
                f"{what}; `got`: the checkpoint):\n{problems or error}"
            ) from None

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
        """
        items = {"weights": ocp.args.StandardRestore(_abstract(weights))}
        if opt_state is not None:
            items["opt_state"] = ocp.args.StandardRestore(_abstract(opt_state))
        restored = self._manager.restore(step, args=ocp.args.Composite(**items))
        restored_weights: jm.Weights = restored["weights"]
        return restored_weights, restored["opt_state"] if opt_state is not None else None

    def wait(self) -> None:
        """Block until every save started so far is written and committed."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Wait for pending saves, then release orbax's resources."""
        self._manager.wait_until_finished()
        self._manager.close()

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
    processes) saved them.

    Args:
        run_dir: the run directory given to `train`.
        weight_params: the spec of the model's weights (`component.weight_params`).
        step: which checkpoint; `None` is the latest.

    Returns:
        The weights tree, with exactly the keys, shapes and dtypes of `weight_params`.

    Raises:
        FileNotFoundError: the run has no checkpoint (of `step`, if given).
        WeightsError: the checkpoint's weights do not match `weight_params`; lists
            every missing, extra and mis-shaped path.
    """
    with Checkpoints(run_dir, create=False) as checkpoints:
        steps = checkpoints.steps()
        if step is None and steps:
            step = steps[-1]
        if step is None or step not in steps:
            listed = ", ".join(map(str, steps)) or "none"
            wanted = "" if step is None else f" of step {step}"
            raise FileNotFoundError(f"`{checkpoints.directory}` has no checkpoint{wanted}; its steps: {listed}")
        checkpoints.check(step, weight_params, "the weight spec")
        device = SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), jm.abstract_weights(weight_params)
        )
        weights, _ = checkpoints.restore(step, target)
        return weights
