"""End-to-end runs of the `jaxmake` command: train, resume, sample, summary, check."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxmake import training
from jaxmake.cli import main
from jaxmake.components import Gpt

TINY_VIT = [
    "--model.n-tfe-layers",
    "1",
    "--model.dim-model",
    "8",
    "--model.n-heads",
    "2",
    "--model.mlp-n-hidden",
    "8",
    "--model.mlp-n-hidden-patches",
    "8",
]
TINY_GPT = ["--n-ctx", "8", "--n-tfe-layers", "1", "--dim-model", "8", "--n-heads", "2", "--batch-size", "4"]


@pytest.fixture(scope="module")
def text_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("text") / "corpus.txt"
    path.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    return path


@pytest.fixture(scope="module")
def chars_run(tmp_path_factory: pytest.TempPathFactory, text_file: Path) -> Path:
    out = tmp_path_factory.mktemp("runs") / "chars"
    assert main(["train", "chars", "--text", str(text_file), "--steps", "6", "--out", str(out), *TINY_GPT]) == 0
    return out


def test_train_digits_writes_the_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "digits"
    assert main(["train", "digits", "--epochs", "1", "--out", str(out), *TINY_VIT]) == 0
    printed = capsys.readouterr().out
    assert "step 22/22" in printed and "test accuracy" in printed and str(out) in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["results"]["test_accuracy"] <= 1.0
    assert [entry["step"] for entry in metrics["history"]][-1] == 22
    config = json.loads((out / "config.json").read_text())
    assert config["metadata"]["model"] == "Vit" and config["metadata"]["config"]["dim_model"] == 8
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert training.Checkpoints(out, create=False).latest_step() == 22


def test_train_chars_reports_loss_against_the_unigram_baseline(chars_run: Path) -> None:
    results = json.loads((chars_run / "metrics.json").read_text())["results"]
    assert results["step"] == 6 and results["valid_loss"] > 0 and results["unigram_baseline"] > 0


def test_resume_finishes_an_interrupted_run_exactly(chars_run: Path, text_file: Path, tmp_path: Path) -> None:
    interrupted = tmp_path / "chars"
    shutil.copytree(chars_run, interrupted)
    shutil.rmtree(interrupted / "checkpoints" / "6")  # as if it had died after step 5
    args = ["train", "chars", "--text", str(text_file), "--steps", "6", "--out", str(interrupted), *TINY_GPT]
    assert main([*args, "--resume"]) == 0
    spec = Gpt.make(Gpt(**json.loads((chars_run / "config.json").read_text())["metadata"]["config"])).weight_params
    straight, resumed = training.load_weights(chars_run, spec), training.load_weights(interrupted, spec)
    jax.tree.map(np.testing.assert_array_equal, straight, resumed)


def test_sample_is_deterministic_and_rejects_unknown_characters(
    chars_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["sample", "--run", str(chars_run), "--prompt", "the ", "--tokens", "12", "--seed", "3"]
    assert main(args) == 0
    first = capsys.readouterr().out.rstrip("\n")
    assert first.startswith("the ") and len(first) == 16
    assert main(args) == 0 and capsys.readouterr().out.rstrip("\n") == first
    assert main(["sample", "--run", str(chars_run), "--prompt", "Zebra"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("jaxmake: error: ") and error.count("\n") == 1 and "'Z'" in error


def test_summary_tables(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", "Vit"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[1].split() == ["path", "shape", "dtype", "params", "bytes"]
    assert table[6].split() == ["encoder.tfe_layer_0.mha.kqv.w", "(12,", "36)", "float32", "432", "1,728"]
    assert table[-1] == "total: 5,808 parameters in 62 arrays, 23,232 bytes (22.7 KiB)"
    assert main(["summary", "Linear", "--set", "n_in=3", "n_out=2"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "total: 8 parameters in 2 arrays, 32 bytes (32.0 B)"
    assert main(["summary", "Linear", "--set", "n_in=4", "n_out=2", "--rules", "fsdp_tp"]) == 0
    assert capsys.readouterr().out.splitlines()[3].split() == ["b", "(2,)", "float32", "2", "8", "(model)"]
    assert main(["summary", "Linear"]) == 2
    assert "`Linear` needs 'n_in', 'n_out'" in capsys.readouterr().err
    assert main(["summary", "Resnet"]) == 2
    assert "unknown model 'Resnet'; the library has: " in capsys.readouterr().err


def test_check_good_and_bad_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "vit.toml"
    good.write_text('model = "Vit"\n\n[config]\ndim_model = 16\nhwc = [8, 8, 1]\nn_patches_side = 2\n')
    assert main(["check", str(good)]) == 0
    out = capsys.readouterr().out
    assert (
        "is valid" in out
        and "encoder.tfe_layer_0.mha: (Input) -> (Output)" in out
        and "make-time contracts hold" in out
    )
    cases = {
        "unknown.toml": ('model = "Vit"\nfoo = 1\n', "unknown key 'foo'"),
        "field.toml": ('model = "Vit"\n[config]\ndim_modle = 3\n', "`Vit` has no field 'dim_modle'"),
        "value.json": ('{"model": "Vit", "config": {"n_heads": 5}}', "`Vit.n_heads`=5 must divide `dim_model`=12"),
        "type.json": (
            '{"model": "Mlp", "config": {"n_in": "3", "n_hidden": [2], "n_out": 1}}',
            "`Mlp.n_in`='3' must be of type int",
        ),
        "broken.toml": ("model = ", "not valid TOML"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_text(content)
        assert main(["check", str(path)]) == 2, name
        error = capsys.readouterr().err
        assert message in error and error.count("\n") == 1 and "Traceback" not in error, error


def test_a_run_config_can_be_checked(chars_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(chars_run / "config.json")]) == 0
    assert "Gpt(" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "digits", "--epochs", "0"], "`TrainDigits.epochs`=0 must be >= 1"),
        (["train", "digits", "--epochs", "x"], "--epochs: invalid literal for int() with base 10: 'x'"),
        (["train", "digits", "--model.n-heads", "5"], "`Vit.n_heads`=5 must divide `dim_model`=64"),
        (["summary", "Vit", "--bogus"], "Unrecognized options: --bogus"),
    ],
)
def test_bad_flags_are_one_line_errors(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2
    assert capsys.readouterr().err == f"jaxmake: error: {message}\n"


def test_the_console_script_exits_2_without_a_traceback() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from jaxmake.cli import entry_point; entry_point()",
            "train",
            "digits",
            "--epochs",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr == "jaxmake: error: `TrainDigits.epochs`=0 must be >= 1\n"
