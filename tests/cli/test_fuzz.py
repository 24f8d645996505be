"""The `jaxmake` command fuzzed in-process: every outcome is exit 0, or exit 2 with one line.

Hypothesis writes config files (TOML, JSON or raw bytes) naming library models with fields
of every JSON type, and argument lists for every command. A traceback, any other exit
status, or an error of more than one line fails the test. Training is replaced by a
stand-in once its arguments are accepted (the loop itself is tested elsewhere); the
multi-process options are left out, since they wait for other processes.

`HYPOTHESIS_PROFILE=dev` runs ten times as many cases; with `JAXMAKE_FUZZ_REPORT=FILE` the
counts of cases by exit status are written to FILE as JSON.
"""

import collections
import contextlib
import io
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxmake.cli import main
from jaxmake.cli._configs import MODELS

OUTCOMES: collections.Counter[str] = collections.Counter()
"""Cases run in this session, by exit status."""


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    report = os.environ.get("JAXMAKE_FUZZ_REPORT")
    if report:
        Path(report).write_text(json.dumps({"cases": sum(OUTCOMES.values()), "by_exit_status": dict(OUTCOMES)}))


def _run(args: list[str]) -> None:
    """Run the command; fail unless it exits 0, or 2 with exactly one `jaxmake: error:` line."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            status = main(args)
        except SystemExit as exit:  # `--help` exits 0 through tyro
            status = exit.code if isinstance(exit.code, int) else 0
    OUTCOMES[str(status)] += 1
    error = stderr.getvalue()
    assert status in (0, 2), f"{args}: exit status {status}\n{error}"
    assert "Traceback" not in error, f"{args}:\n{error}"
    if status == 2:
        lines = [line for line in error.splitlines() if not line.startswith("jaxmake: warning: ")]
        assert len(lines) == 1 and lines[0].startswith("jaxmake: error: "), f"{args}:\n{error}"


def _json_values() -> st.SearchStrategy[Any]:
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(-3, 130)
        | st.integers()
        | st.sampled_from([2**40, 2**40 + 1, 2**62, -(10**4000), 10**4000])
        | st.floats(allow_nan=True, allow_infinity=True)
        | st.text(max_size=6)
        | st.sampled_from(["gelu", "relu", "sum", "concat", "embed"])
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=2),
        max_leaves=6,
    )


@st.composite
def _model_files(draw: st.DrawFn) -> tuple[str, bytes]:
    """A file name and its content: a config naming a model (in any case, or a made-up one) and some fields."""
    name = draw(st.sampled_from(sorted(MODELS)) | st.text(max_size=6))
    name = draw(st.sampled_from([name, name.lower(), name.upper()]))
    known = sorted(f for f in MODELS[name].__dataclass_fields__) if name in MODELS else []
    field_names = st.sampled_from(known) | st.text(max_size=6) if known else st.text(max_size=6)
    fields = draw(st.dictionaries(field_names, _json_values(), max_size=4))
    document: dict[str, Any] = {"model": name, "config": fields}
    if draw(st.booleans()):
        document = (
            draw(st.dictionaries(st.sampled_from(["model", "config", "train", "bogus"]), _json_values(), max_size=3))
            | document
        )
    kind = draw(st.sampled_from(["json", "toml", "bytes"]))
    if kind == "bytes":
        return "config.json", draw(st.binary(max_size=64))
    if kind == "toml":
        return "config.toml", _toml(document).encode()
    return "config.json", json.dumps(document).encode()


def _toml(document: dict[str, Any]) -> str:
    """`document` as TOML text, as well as TOML can say it (`null` has no TOML form: left as such, a syntax error)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, float) and not math.isfinite(v):
            return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
        if isinstance(v, list):
            return f"[{', '.join(map(value, v))}]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{json.dumps(k)} = {value(x)}" for k, x in v.items()) + "}"
        return "null" if v is None else json.dumps(v)

    return "\n".join(f"{json.dumps(k)} = {value(v)}" for k, v in document.items()) + "\n"


@given(
    file=_model_files(), command=st.sampled_from(["check", "summary"]), sets=st.lists(st.text(max_size=12), max_size=2)
)
def test_config_files(
    file: tuple[str, bytes], command: str, sets: list[str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    name, content = file
    path = tmp_path_factory.mktemp("fuzz") / name
    path.write_bytes(content)
    if command == "check":
        _run(["check", str(path)])
    else:
        model = json.loads(content).get("model", "Mlp") if name.endswith(".json") and content[:1] == b"{" else "Mlp"
        _run(["summary", str(model), "--config", str(path), *[arg for s in sets for arg in ("--set", s)]])


OPTIONS = {
    "train digits": [
        "--epochs",
        "--batch-size",
        "--learning-rate",
        "--weight-decay",
        "--seed",
        "--augment",
        "--vit.dim-model",
        "--vit.n-heads",
        "--vit.hwc",
        "--vit.n-patches-side",
        "--vit.dtype",
        "--precision",
        "--model",
        "--steps-per-call",
        "--resnet.widths",
        "--resnet.hwc",
        "--resnet.n-classes",
    ],
    "train chars": [
        "--steps",
        "--batch-size",
        "--n-ctx",
        "--n-tfe-layers",
        "--dim-model",
        "--n-heads",
        "--text",
        "--learning-rate",
        "--precision",
    ],
    "summary Vit": ["--set", "--rules", "--config"],
    "sample": ["--run", "--tokens", "--temperature", "--top-k", "--prompt", "--seed"],
    "check": [],
}
SCALE = ["--mesh", "--rules", "--cpu-devices"]
VALUES = [
    "0",
    "1",
    "2",
    "3",
    "-1",
    "8",
    "64",
    "1e-3",
    "0.5",
    "x",
    "",
    "9" * 5000,
    "data=2",
    "data=2,model=2",
    "model=4",
    "data=0",
    "dp",
    "fsdp",
    "tp",
    "fsdp_tp",
    "bf16",
    "float16",
    "n_in=3",
    "n_heads=5",
    "--bogus",
    "--help",
    "README.md",
    "resnet",
    "vit",
]


@st.composite
def _argument_lists(draw: st.DrawFn) -> list[str]:
    command = draw(st.sampled_from(sorted(OPTIONS)))
    options = OPTIONS[command] + (SCALE if command.startswith("train") else [])
    args = command.split()
    for _ in range(draw(st.integers(0, 4))):
        args += [draw(st.sampled_from([*options, "--bogus"])), draw(st.sampled_from(VALUES))]
    return args


@given(args=_argument_lists())
def test_argument_lists(args: list[str], tmp_path_factory: pytest.TempPathFactory) -> None:
    out = tmp_path_factory.mktemp("out")
    if args[:1] == ["train"]:
        args += ["--out", str(out)]
    if args == ["check"]:
        args.append(str(out))  # a folder, not a file
    with mock.patch("jaxmake.cli._commands._train_and_report"):  # accepted: stop before the loop
        _run(args)
