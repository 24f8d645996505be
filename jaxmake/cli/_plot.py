"""The loss (and evaluation) plot of a run, as a PNG."""

import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt


def plot_history(run: Path, title: str, evaluations: Sequence[str]) -> Path:
    """Plot the training loss and each evaluation of `run/metrics.json` to `run/loss.png`.

    Args:
        run: the run folder.
        title: the figure's title.
        evaluations: names of evaluation metrics (`test_accuracy`) drawn on a second panel.

    Returns:
        The path of the PNG.
    """
    history = json.loads((run / "metrics.json").read_text())["history"]
    figure, (loss_axes, eval_axes) = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    loss_axes.plot([e["step"] for e in history], [e["loss"] for e in history], label="training loss")
    loss_axes.set(xlabel="step", ylabel="loss", yscale="log", title=title)
    for name in evaluations:
        points = [(e["step"], e[f"eval_{name}"]) for e in history if e.get(f"eval_{name}") is not None]
        eval_axes.plot(*zip(*points), marker="o", label=name.replace("_", " "))
    eval_axes.set(xlabel="step", title="evaluation")
    for axes in (loss_axes, eval_axes):
        axes.grid(alpha=0.3)
        axes.legend()
    path = run / "loss.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
