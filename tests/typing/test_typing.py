"""Static checks as tests: mypy must reject the files in `reject/` exactly as their comments say.

A line ending in `# E: <code>: <text>` must get a mypy error with that code whose message
starts with `<text>`; `# N: <text>` marks a note. Any error that is not announced fails
the test. The files in `accept/` are part of the main `mypy --strict` run.
"""

import re
from pathlib import Path

import pytest
from mypy import api

ROOT = Path(__file__).resolve().parents[2]
REJECT = sorted((Path(__file__).parent / "reject").glob("*.py"))
MARK = re.compile(r"#\s*([EN]): (.*?)(?=\s+#\s*[EN]: |$)")
REPORT = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): (?P<kind>error|note): (?P<text>.*?)(?:  \[(?P<code>[a-z-]+)\])?$")


@pytest.fixture(scope="module")
def mypy_report() -> list[str]:
    files = [str(path.relative_to(ROOT)) for path in REJECT]
    stdout, stderr, _ = api.run(["--config-file", str(ROOT / "mypy.ini"), "--no-error-summary", *files])
    assert not stderr, stderr
    return stdout.splitlines()


def _expected(path: Path) -> set[tuple[int, str, str]]:
    marks = set()
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        for kind, text in MARK.findall(line):
            marks.add((number, "error" if kind == "E" else "note", text.strip()))
    return marks


@pytest.mark.parametrize("path", REJECT, ids=lambda p: p.name)
def test_mypy_rejects_exactly_what_is_marked(path: Path, mypy_report: list[str]) -> None:
    relative = str(path.relative_to(ROOT))
    reports = [m for m in map(REPORT.match, mypy_report) if m and m["file"] == relative]
    expected = _expected(path)
    assert expected, f"{relative} announces no error"
    for number, kind, text in expected:
        code, _, message = text.partition(": ") if kind == "error" else ("", "", text)
        found = [
            r
            for r in reports
            if int(r["line"]) == number
            and r["kind"] == kind
            and r["text"].strip().startswith(message)
            and (r["code"] or "") == code
        ]
        assert found, f"{relative}:{number}: mypy did not report {kind} {text!r}; it said:\n" + "\n".join(mypy_report)
    announced = {number for number, kind, _ in expected if kind == "error"}
    surprises = [r.string for r in reports if r["kind"] == "error" and int(r["line"]) not in announced]
    assert not surprises, "unannounced mypy errors:\n" + "\n".join(surprises)
