"""`jaxmake plan`: a plan, a sweep with rejected points, point files that `jaxmake train` accepts, one-line errors."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from jaxmake import training
from jaxmake.cli import main

JAXMAKE = [sys.executable, "-c", "import sys; from jaxmake.cli import main; sys.exit(main(sys.argv[1:]))"]
"""The command in a fresh process (where `--cpu-devices` can still take effect)."""

TINY = ["vocab_size=16", "n_ctx=8", "n_tfe_layers=1", "dim_model=8", "n_heads=2", "mlp_n_hidden=[16]"]


@pytest.fixture
def compiles(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The batch size of every step `jaxmake plan` compiles."""
    calls: list[int] = []
    plan_step = training.plan_step

    def counted(*args: Any, **kwargs: Any) -> training.StepPlan:
        plan = plan_step(*args, **kwargs)
        calls.append(plan.batch_size)
        return plan

    monkeypatch.setattr(training, "plan_step", counted)
    return calls


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.startswith("jaxmake: error: ") and err.count("\n") == 1, err
    return err


def test_plan_reports_memory_flops_and_the_largest_batch(
    capsys: pytest.CaptureFixture[str], compiles: list[int]
) -> None:
    assert main(["plan", "gpt", "--set", *TINY, "--batch-size", "4", "--device-memory", "8MiB", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["params"]["total"] == sum(report["params"]["groups"].values())
    assert set(report["params"]["groups"]) == {"embedding", "positional_encoding", "encoder", "lm_head"}
    memory, verdict = report["bytes_per_device"], report["verdict"]
    assert memory["weights"] == 4 * report["params"]["total"]
    assert memory["peak"] == memory["arguments"] + memory["temp"] + memory["outputs_not_aliased"]
    assert report["xla"]["flops"] > 0 and report["analytic"]["formula"] == "6 N + 12 L T d"
    assert verdict["fits"] and verdict["device_memory"] == 8 * 2**20
    largest = verdict["largest_batch"]
    assert compiles[0] == 4 and verdict["search_compiles"] == len(compiles) - 1
    assert largest in compiles and largest + 1 in compiles  # both compiled: the largest fits, one more does not


def test_plan_text_of_a_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"  # a training run's folder: its config.json is read, `train` table included
    run.mkdir()
    fields = {name: json.loads(value) for name, value in (item.split("=") for item in TINY)}
    train = {"steps": 5, "batch_size": 2, "freeze": ["embedding"]}
    (run / "config.json").write_text(json.dumps({"train": train, "metadata": {"model": "Gpt", "config": fields}}))
    assert main(["plan", str(run), "--fit-batch", "off", "--device-memory", "1KB"]) == 0
    text = capsys.readouterr().out
    assert "batch 2 on 1 cpu device" in text
    assert "verdict: does NOT fit in 1KB" in text
    assert "XLA / analytic = " in text and "collectives: none" in text


def test_plan_of_a_model_with_state(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["plan", "resnet", "--set", "hwc=[8,8,1]", "n_classes=10", "widths=[8]", "blocks_per_stage=1"]
    assert main([*args, "--batch-size", "8", "--fit-batch", "off", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["bytes_per_device"]["state"] > 0  # BatchNorm's running statistics
    assert report["xla"]["flops_per_token"] is None and report["analytic"] is None
    assert report["xla"]["flops_per_example"] * 8 == report["xla"]["flops"]


def test_a_sweep_rejects_invalid_points_without_compiling_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], compiles: list[int]
) -> None:
    out = tmp_path / "plans"
    args = ["plan", "gpt", "--set", *TINY, "--sweep", "dim_model=8,9", "n_tfe_layers=1,2", "--out", str(out)]
    assert main([*args, "--json", "--batch-size", "2", "--workers", "1"]) == 0  # in this process: counted
    captured = capsys.readouterr()
    rows = json.loads(captured.out)
    assert [row["status"] for row in rows] == ["planned", "planned", "rejected", "rejected"]
    assert rows[2]["error"] == "point 3: `Gpt.n_heads`=2 must divide `dim_model`=9"  # the ConfigError's line
    assert sorted(compiles) == [2, 2]  # the rejected points compiled nothing
    assert rows[1]["plan"]["xla"]["flops"] > rows[0]["plan"]["xla"]["flops"]  # two layers
    assert "2 points planned, 2 rejected" in captured.err
    assert sorted(p.name for p in out.iterdir()) == ["plan.json", "plan.md", "plan.png", "point-1.json", "point-2.json"]
    table = (out / "plan.md").read_text().splitlines()
    assert table[0].startswith("| # | dim_model | n_tfe_layers | params |") and len(table) == 6
    assert table[4].startswith("| 3 | 9 | 1 | rejected: point 3: `Gpt.n_heads`=2 must divide `dim_model`=9 |")
    point = json.loads((out / "point-2.json").read_text())
    assert point["model"] == "Gpt" and point["config"]["n_tfe_layers"] == 2 and point["train"] == {"batch_size": 2}


def test_a_sweep_point_trains_as_is(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "plans"
    text = tmp_path / "corpus.txt"
    text.write_text("abcdefghijklmno " * 40)  # 16 characters: the vocab_size of TINY
    args = ["plan", "gpt", "--set", *TINY, "--sweep", "n_heads=1,2", "--batch-size", "2", "--workers", "1"]
    args += ["--out", str(out)]
    assert main(args) == 0
    capsys.readouterr()
    run = tmp_path / "run"
    train = ["train", "chars", "--config", str(out / "point-2.json"), "--text", str(text), "--steps", "2"]
    assert main([*train, "--out", str(run)]) == 0
    metadata = training.load_metadata(run)
    assert metadata["config"] == json.loads((out / "point-2.json").read_text())["config"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["gpt", "--set", *TINY, "n_heads=3"], "`Gpt.n_heads`=3 must divide `dim_model`=8"),
        (["linear"], "`jaxmake plan` plans the training step of a model `jaxmake train`"),
        (["gpt", "--device-memory", "lots"], "--device-memory takes a size such as 80GB"),
        (["gpt", "--sweep", "dim_mode=8,16"], "--sweep dim_mode=8,16: `Gpt` has no field 'dim_mode'"),
        (["gpt", "--sweep", "dim_model"], "--sweep takes FIELD=V1,V2,..., got 'dim_model'"),
        (["gpt", "--set", *TINY, "--mesh", "data=3"], "the mesh data=3 needs 3 devices"),
        (["gpt", "--set", *TINY, "--batch-size", "0"], "`Plan.batch_size`=0 must be >= 1"),
        (["gpt", "--measure", "--sweep", "n_heads=1,2"], "`Plan.measure`=True runs the step of one plan"),
    ],
)
def test_plan_errors_are_one_line_before_any_compile(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str], compiles: list[int]
) -> None:
    assert main(["plan", *args]) == 2
    assert message in _error(capsys)
    assert compiles == []


def test_plan_on_an_emulated_mesh(tmp_path: Path) -> None:
    """Per-device bytes under the rules, the collectives, and a point that does not divide over the mesh."""
    args = ["plan", "gpt", "--set", *TINY, "--mesh", "data=2,model=2", "--rules", "fsdp_tp", "--cpu-devices", "4"]
    sweep = [
        *args,
        "--batch-size",
        "4",
        "--sweep",
        "mlp_n_hidden=[16],[15],[32]",
        "--json",
        "--workers",
        "2",
        "--out",
        str(tmp_path),
    ]
    done = subprocess.run([*JAXMAKE, *sweep], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    planned, rejected, wider = json.loads(done.stdout)  # the planned points were compiled by 2 worker processes
    report = planned["plan"]
    assert wider["plan"]["xla"]["flops"] > report["xla"]["flops"]
    assert report["devices"] == 4
    assert report["bytes_per_device"]["weights"] < 4 * report["params"]["total"]  # split over the mesh
    assert report["xla"]["collectives"].get("all-reduce", 0) > 0
    assert rejected["status"] == "rejected" and "cannot be split over mesh axis" in rejected["error"]
    single = [*args[:-6], "mlp_n_hidden=[15]", *args[-6:]]
    done = subprocess.run([*JAXMAKE, *single], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "cannot be split over mesh axis" in done.stderr
