"""The plain-JSON files of a run directory: `config.json` and `metrics.json`.

```
run_dir/
  config.json    {"train": TrainConfig as a dict, "metadata": the caller's dicts}
  metrics.json   the history: a list of {"step": ..., "loss": ..., ...}
  checkpoints/   orbax checkpoints, see `Checkpoints`
```
Both files are replaced atomically (written beside, then renamed), so a reader never sees
half a file. Nothing is pickled. A file damaged all the same (by hand, by a disk) raises a
`RunDirError` naming it, never a parser's exception.
"""

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jaxmake as jm
from jaxmake.training._config import TrainConfig

CONFIG = "config.json"
METRICS = "metrics.json"

MAX_JSON_BYTES = 1 << 26
"""The largest `config.json` or `metrics.json` read (64 MiB; a long run's history is a few MiB)."""


class RunDirError(jm.JaxMakeError, OSError):
    """A file of a run directory is missing or damaged; the message names it and says what to do."""


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
        RunDirError: the run directory has no `config.json`, or it is damaged (not
            UTF-8, not JSON, or without a `metadata` table).
    """
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise RunDirError(f"`{run_dir}` holds no {CONFIG}: is it a run folder (the --out of a training run)?")
    metadata = _read_json(path, "metadata", "it is written when a run starts: train the run again")
    if not isinstance(metadata, dict):
        raise RunDirError(f"`{path}` is damaged: its 'metadata' is not a table; train the run again")
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
    """The history in `metrics.json` (`null` read back as NaN), or `[]` if there is none yet.

    Raises:
        RunDirError: `metrics.json` is damaged (not JSON, or without a list of entries).
    """
    path = run_dir / METRICS
    if not path.exists():
        return []
    advice = "delete it to resume without the history of the earlier sessions (the checkpoints hold the rest)"
    entries = _read_json(path, "history", advice)
    if not (isinstance(entries, list) and all(isinstance(entry, dict) for entry in entries)):
        raise RunDirError(f"`{path}` is damaged: its 'history' is not a list of entries; {advice}")
    return [{key: math.nan if value is None else value for key, value in entry.items()} for entry in entries]


def _read_json(path: Path, key: str, advice: str) -> Any:
    """The value under `key` in the JSON object of the file at `path` (of at most `MAX_JSON_BYTES`).

    Raises:
        RunDirError: the file cannot be read, is too large, is not UTF-8 JSON, or is not an
            object with `key`; the message ends with `advice`.
    """
    try:
        with path.open("rb") as file:
            content = file.read(MAX_JSON_BYTES + 1)
        if len(content) > MAX_JSON_BYTES:
            raise ValueError(f"larger than {MAX_JSON_BYTES:,} bytes")
        data = json.loads(content.decode("utf-8"))
    except (OSError, ValueError, RecursionError) as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error) or "nested too deeply"
        raise RunDirError(f"`{path}` is damaged ({reason}); {advice}") from None
    if not isinstance(data, dict) or key not in data:
        raise RunDirError(f"`{path}` is damaged: it is not a JSON object with '{key}'; {advice}")
    return data[key]


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text + "\n")
    os.replace(partial, path)


def _dataclass_as_dict(value: object) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
