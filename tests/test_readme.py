"""The README is the front door: its snippets run, its printed output is what it says, and
its test command is the one CI runs."""

import contextlib
import io
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


def test_python_snippets_run_and_print_what_the_readme_shows() -> None:
    namespace: dict[str, object] = {"__name__": "readme"}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        for block in _blocks("python"):
            exec(compile(block, "README.md", "exec"), namespace)
    lines = [line for line in printed.getvalue().splitlines() if line.strip()]
    assert len(lines) >= 7
    for line in lines:
        assert f"# {line}" in README, f"the README does not show the printed line {line!r}"


def test_ci_runs_the_readme_test_command() -> None:
    (command,) = [block.strip() for block in _blocks("bash") if "pytest" in block]
    ci_lines = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci_lines[-1] == command
