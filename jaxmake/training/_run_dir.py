"""The plain-JSON files of a run directory: `config.json` and `metrics.json`.

```
run_dir/
  config.json    {"train": TrainConfig as a dict, "metadata": the caller's dicts}
  metrics.json   the history: a list of {"step": ..., "loss": ..., ...}
  checkpoints/   orbax checkpoints, see `Checkpoints`
```
Both files are replaced atomically (written beside, then renamed), so a reader never sees
half a file. Nothing is pickled.
"""

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jaxmake.training._config import TrainConfig

CONFIG = "config.json"
METRICS = "metrics.json"

History = list[dict[str, float]]
"""The metrics history: one dict per entry, each with at least `step`, `time` and `loss`."""


def write_config(run_dir: Path, config: TrainConfig, metadata: Mapping[str, Any] | None) -> None:
    """Write `config.json`: the `TrainConfig` and the caller's metadata.

    Args:
        run_dir: the run directory (created if missing).
        config: stored under `"train"`, as a dict of its fields.
        metadata: stored under `"metadata"`: JSON values, or dataclasses (such as a
            model's `jm.Config`), which are stored as dicts of their fields.

    Raises:
        TypeError: `metadata` holds a value that is neither JSON nor a dataclass.
    """
    content = {"train": dataclasses.asdict(config), "metadata": dict(metadata or {})}
    try:
        text = json.dumps(content, indent=2, default=_dataclass_as_dict, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise TypeError(f"`metadata` must hold JSON values or dataclasses to write `{CONFIG}`: {error}") from None
    _write_atomically(run_dir / CONFIG, text)


def load_metadata(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The `metadata` given to `train` for this run, as written to `config.json`.

    Raises:
        FileNotFoundError: the run directory has no `config.json`.
    """
    content: dict[str, Any] = json.loads((Path(run_dir) / CONFIG).read_text())
    metadata: dict[str, Any] = content["metadata"]
    return metadata


def write_history(run_dir: Path, history: History) -> None:
    """Write `metrics.json`: `{"results": ..., "history": [...]}`.

    `results` holds the last entry's `step` and `loss` and its evaluations without the
    `eval_` prefix (`eval_test_accuracy` -> `test_accuracy`). Values that are not finite
    (a NaN accuracy) are written as `null`.
    """
    clean = [{key: value if math.isfinite(value) else None for key, value in entry.items()} for entry in history]
    last = clean[-1] if clean else {}
    results = {
        key.removeprefix("eval_"): value
        for key, value in last.items()
        if key in ("step", "loss") or key.startswith("eval_")
    }
    _write_atomically(run_dir / METRICS, json.dumps({"results": results, "history": clean}, indent=1))


def record_results(run_dir: str | os.PathLike[str], results: Mapping[str, float]) -> None:
    """Add figures (e.g. a baseline to compare with) to the `results` of `metrics.json`."""
    path = Path(run_dir) / METRICS
    content = json.loads(path.read_text())
    content["results"].update(results)
    _write_atomically(path, json.dumps(content, indent=1))


def read_history(run_dir: Path) -> History:
    """The history in `metrics.json` (`null` read back as NaN), or `[]` if there is none yet."""
    path = run_dir / METRICS
    if not path.exists():
        return []
    entries: list[dict[str, float | None]] = json.loads(path.read_text())["history"]
    return [{key: math.nan if value is None else value for key, value in entry.items()} for entry in entries]


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text + "\n")
    os.replace(partial, path)


def _dataclass_as_dict(value: object) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
