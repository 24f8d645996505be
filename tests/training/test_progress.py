"""Progress displays: log lines, the tqdm bar, and the choice between them."""

import io

import pytest

from jaxmake.training._progress import BarProgress, LineProgress, Progress, make_progress

ENTRY = {"step": 10, "loss": 0.5, "lr": 2e-3, "grad_norm": 1.0, "acc": 0.25, "steps_per_s": 40.0, "time": 1.0}


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_lines_print_one_line_per_entry(capsys: pytest.CaptureFixture[str]) -> None:
    progress = LineProgress(total=20, first=0)
    progress.report(ENTRY)
    progress.report(ENTRY | {"step": 20, "eval_acc": 0.5})
    progress.close()
    assert capsys.readouterr().out.splitlines() == [
        "step 10/20  loss 0.5000  lr 2.0e-03  40.0 steps/s  acc 0.25",
        "step 20/20  loss 0.5000  lr 2.0e-03  40.0 steps/s  acc 0.25  eval_acc 0.5",
    ]


def test_the_bar_shows_steps_and_loss_and_keeps_eval_lines(capsys: pytest.CaptureFixture[str]) -> None:
    progress = BarProgress(total=20, first=5)
    progress.report(ENTRY)
    progress.report(ENTRY | {"step": 20, "loss": 0.25, "eval_acc": 0.5})
    progress.close()
    out = capsys.readouterr().out
    assert "20/20" in out and "loss 0.2500" in out and "step/s" in out
    assert "step 20/20  loss 0.2500  lr 2.0e-03  40.0 steps/s  acc 0.25  eval_acc 0.5\n" in out


def test_none_picks_the_bar_on_a_terminal_and_lines_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdout", _Terminal())
    bar = make_progress(None, 10, 0)
    assert isinstance(bar, BarProgress)
    bar.close()
    monkeypatch.setattr("sys.stdout", io.StringIO())
    assert type(make_progress(None, 10, 0)) is LineProgress
    assert type(make_progress("off", 10, 0)) is Progress


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^`progress` must be 'bar', 'lines', 'off' or None, got 'loud'$"):
        make_progress("loud", 10, 0)  # type: ignore[arg-type]
