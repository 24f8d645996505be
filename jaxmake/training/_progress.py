"""Showing progress: a tqdm bar on a terminal, plain log lines elsewhere (CI, files)."""

import sys
from collections.abc import Mapping
from typing import Literal

from tqdm import tqdm

import jaxmake as jm

ProgressMode = Literal["bar", "lines", "off"]
"""`"bar"`: a tqdm bar; `"lines"`: one printed line per history entry; `"off"`: nothing."""

_SHOWN_FIRST = ("step", "loss", "lr", "steps_per_s")
_NOT_SHOWN = ("time", "grad_norm")


def format_entry(entry: Mapping[str, float], total: int) -> str:
    """One log line for a history entry.

    Example:
        >>> entry = {"step": 100, "loss": 0.43214, "lr": 0.0019, "steps_per_s": 12.34, "eval_accuracy": 0.95}
        >>> format_entry(entry, 2000)
        'step 100/2000  loss 0.4321  lr 1.9e-03  12.3 steps/s  eval_accuracy 0.95'
    """
    parts = [f"step {int(entry['step'])}/{total}", f"loss {entry['loss']:.4f}", f"lr {entry['lr']:.1e}"]
    if "steps_per_s" in entry:
        parts.append(f"{entry['steps_per_s']:.1f} steps/s")
    parts += [f"{name} {value:.4g}" for name, value in entry.items() if name not in _SHOWN_FIRST + _NOT_SHOWN]
    return "  ".join(parts)


class Progress:
    """Shows the entries of a run as they come; this base class shows nothing (`"off"`).

    Args:
        total: the run's total steps.
        first: the step the run starts from (0, or the step resumed from).
    """

    def __init__(self, total: int, first: int) -> None:
        self.total = total
        self.first = first

    def report(self, entry: Mapping[str, float]) -> None:
        """Show one new history entry."""

    def close(self) -> None:
        """Finish showing (leaves a bar on screen)."""


class LineProgress(Progress):
    """Prints `format_entry` of every entry to stdout, flushed at once (for CI logs, files)."""

    def report(self, entry: Mapping[str, float]) -> None:
        print(format_entry(entry, self.total), flush=True)


class BarProgress(Progress):
    """A tqdm bar on stdout with steps/s and the latest loss and learning rate.

    Entries with evaluation results are also printed above the bar, so they stay.
    """

    def __init__(self, total: int, first: int) -> None:
        super().__init__(total, first)
        self._bar = tqdm(total=total, initial=first, unit="step", file=sys.stdout, dynamic_ncols=True)

    def report(self, entry: Mapping[str, float]) -> None:
        self._bar.set_postfix_str(f"loss {entry['loss']:.4f}  lr {entry['lr']:.1e}", refresh=False)
        self._bar.update(int(entry["step"]) - self._bar.n)
        if any(name.startswith("eval_") for name in entry):
            self._bar.write(format_entry(entry, self.total), file=sys.stdout)

    def close(self) -> None:
        self._bar.close()


@jm.checks_own_arguments
def make_progress(mode: ProgressMode | None, total: int, first: int) -> Progress:
    """The progress display for `mode`; `None` picks `"bar"` if stdout is a terminal, else `"lines"`.

    Raises:
        ValueError: `mode` is not one of `"bar"`, `"lines"`, `"off"` or `None`.
    """
    if mode is None:
        mode = "bar" if sys.stdout.isatty() else "lines"
    match mode:
        case "bar":
            return BarProgress(total, first)
        case "lines":
            return LineProgress(total, first)
        case "off":
            return Progress(total, first)
    raise ValueError(f"`progress` must be 'bar', 'lines', 'off' or None, got {mode!r}")
