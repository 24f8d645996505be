"""`jaxmake train` on a mesh and on several processes: `--mesh`, `--rules`, `--coordinator`, ...

The test process sees 4 CPU devices (the repository's conftest.py). The two-process runs
start two `jaxmake train chars` processes of 2 CPU devices each, talking over loopback.
"""

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxmake import training
from jaxmake.cli import main
from jaxmake.components import Gpt

TINY_GPT = [
    "--steps",
    "3",
    "--n-ctx",
    "8",
    "--n-tfe-layers",
    "1",
    "--dim-model",
    "8",
    "--n-heads",
    "2",
    "--batch-size",
    "4",
]

# Records every file a process opens for writing or renames into place, and writes the
# list to the file named by $WRITTEN when the process ends: what each process wrote. With
# $KILL_AT, the process kills itself (SIGKILL) just before renaming a path that contains it.
SPY = """
import atexit, json, os, signal, sys
written = set()
def spy(event, args):
    if event == "open" and (
        args[2] & (os.O_WRONLY | os.O_RDWR) if args[1] is None else set(args[1]) & set("wax+")
    ):
        written.add(str(args[0]))
    elif event == "os.rename":
        if os.environ.get("KILL_AT") and os.environ["KILL_AT"] in str(args[0]):
            os.kill(os.getpid(), signal.SIGKILL)
        written.add(str(args[1]))
sys.addaudithook(spy)
atexit.register(lambda: open(os.environ["WRITTEN"] + ".json", "w").write(json.dumps(sorted(written))))
from jaxmake.cli import entry_point
entry_point()
"""


@pytest.fixture(scope="module")
def text_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("text") / "corpus.txt"
    path.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    return path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class _Processes:
    """The processes of one multi-process run, started by `_two_processes`."""

    running: list["subprocess.Popen[str]"]

    def wait(self, status: int | None = 0) -> list[subprocess.CompletedProcess[str]]:
        """Wait for all to end; check their exit `status` (showing the stderr of one that differs) unless `None`."""
        finished = []
        for index, process in enumerate(self.running):
            stdout, stderr = process.communicate(timeout=240)
            assert status is None or process.returncode == status, f"process {index}: {process.returncode}\n{stderr}"
            finished.append(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
        return finished

    def kill_all_once_one_ends(self) -> None:
        """Wait until one process ends (within 240 s), then SIGKILL the others."""
        deadline = time.monotonic() + 240
        while all(process.poll() is None for process in self.running):
            assert time.monotonic() < deadline, "no process ended"
            time.sleep(0.05)
        for process in self.running:
            process.kill()


@contextlib.contextmanager
def _two_processes(
    args: list[str], tmp_path: Path, name: str = "", args_1: list[str] | None = None, **extra_env: str
) -> Iterator[_Processes]:
    """Start `jaxmake train chars ARGS` as processes 0 and 1 of one run over loopback (process 1: `args_1` if given).

    Process 0 gets its options on the command line and its devices from `--cpu-devices`;
    process 1 gets them from $JAXMAKE_* and $XLA_FLAGS, so both ways are used. Each
    records what it wrote in `tmp_path/{name}written-{process id}.json`; `extra_env` is
    added to the environment of both.

    Yields:
        The two processes; both are killed on leaving the context.
    """
    coordinator = f"127.0.0.1:{_free_port()}"
    base = {
        key: value for key, value in os.environ.items() if not key.startswith(("JAXMAKE_", "XLA_FLAGS"))
    } | extra_env
    commands = [
        (
            [*args, "--cpu-devices", "2", "--coordinator", coordinator, "--num-processes", "2", "--process-id", "0"],
            {**base, "WRITTEN": str(tmp_path / f"{name}written-0")},
        ),
        (
            args if args_1 is None else args_1,
            {
                **base,
                "WRITTEN": str(tmp_path / f"{name}written-1"),
                "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
                "JAXMAKE_COORDINATOR": coordinator,
                "JAXMAKE_NUM_PROCESSES": "2",
                "JAXMAKE_PROCESS_ID": "1",
            },
        ),
    ]
    running = [
        subprocess.Popen(
            [sys.executable, "-c", SPY, "train", "chars", *argv],
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for argv, env in commands
    ]
    try:
        yield _Processes(running)
    finally:
        for process in running:
            process.kill()
            process.communicate()  # reaps it and closes its pipes


def _mesh_args(text_file: Path) -> list[str]:
    return ["--text", str(text_file), *TINY_GPT, "--mesh", "data=2,model=2", "--rules", "fsdp_tp"]


@pytest.fixture(scope="module")
def uninterrupted(
    text_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[subprocess.CompletedProcess[str]]]:
    """Runs `two` (two processes), `one` (one process, 4 devices) and `device` (one device), in one folder.

    Returns:
        The folder, and the two processes of `two`.
    """
    tmp_path = tmp_path_factory.mktemp("uninterrupted")
    args = _mesh_args(text_file)
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("JAXMAKE_CHECK_CONTRACTS", "0")  # checked elsewhere; saves seconds in each run
        with _two_processes([*args, "--out", str(tmp_path / "two")], tmp_path) as two:  # meanwhile, in this process:
            assert main(["train", "chars", *args, "--out", str(tmp_path / "one")]) == 0  # one process, 4 devices
            assert main(["train", "chars", "--text", str(text_file), *TINY_GPT, "--out", str(tmp_path / "device")]) == 0
            return tmp_path, two.wait()


def test_two_processes_train_like_one_process_and_like_one_device(
    uninterrupted: tuple[Path, list[subprocess.CompletedProcess[str]]],
) -> None:
    tmp_path, processes = uninterrupted
    runs = {name: json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("two", "one", "device")}
    for name in ("one", "device"):
        for key in ("loss", "valid_loss"):
            np.testing.assert_allclose(
                runs["two"]["results"][key], runs[name]["results"][key], rtol=1e-5, err_msg=f"{name}: {key}"
            )
        np.testing.assert_allclose(
            [e["loss"] for e in runs["two"]["history"]], [e["loss"] for e in runs[name]["history"]], rtol=1e-5
        )
    assert [e["step"] for e in runs["two"]["history"]] == [1, 2, 3]

    spec = Gpt.make(
        Gpt(**json.loads((tmp_path / "two" / "config.json").read_text())["metadata"]["config"])
    ).weight_params
    both_saved = training.load_weights(tmp_path / "two", spec)  # each process wrote its own shards
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        both_saved,
        training.load_weights(tmp_path / "one", spec),
    )

    run_files = ("config.json", "metrics.json", "loss.png")
    written = [{Path(path).name for path in json.loads((tmp_path / f"written-{i}.json").read_text())} for i in (0, 1)]
    assert set(run_files) <= written[0], written[0]
    assert not set(run_files) & written[1] and not any(name.endswith(".partial") for name in written[1]), written[1]
    assert "step 3/3  loss " in processes[0].stdout and "\nvalidation loss " in processes[0].stdout
    assert "loss" not in processes[1].stdout  # no progress, no summary (only Gloo's lines, from several threads)


def test_two_processes_without_a_shared_run_folder_both_stop_with_one_line(
    text_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JAXMAKE_CHECK_CONTRACTS", "0")
    outs = [tmp_path / "zero", tmp_path / "one"]  # each process its own folder, as without a shared file system
    args = [[*_mesh_args(text_file), "--out", str(out)] for out in outs]
    started = time.monotonic()
    with _two_processes(args[0], tmp_path, args_1=args[1]) as processes:
        finished = processes.wait(status=2)
    assert time.monotonic() - started < 180  # they used to wait at the first checkpoint for 10 minutes or more
    for out, process in zip(outs, finished):
        assert "Traceback" not in process.stderr
        lines = [line for line in process.stderr.splitlines() if not line.startswith("[Gloo]")]
        assert lines == [
            f"jaxmake: error: the run folder `{out}` is not one folder shared by all 2 processes: process 1 does not "
            f"see the file that process 0 wrote in it. With several processes, give all of them the same run folder, "
            f"on a file system that every process sees (e.g. a network file system)"
        ]
        assert not out.exists()  # nothing left behind


def test_a_two_process_run_killed_mid_checkpoint_resumes_as_if_never_stopped(
    uninterrupted: tuple[Path, list[subprocess.CompletedProcess[str]]],
    text_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JAXMAKE_CHECK_CONTRACTS", "0")
    args = [*_mesh_args(text_file), "--out", str(tmp_path / "run")]  # a checkpoint at every step
    checkpoints = tmp_path / "run" / "checkpoints"
    # The process that commits checkpoint 2 dies just before renaming it into place (every
    # shard written, nothing committed); the other is then killed too.
    with _two_processes(args, tmp_path, "killed-", KILL_AT=f"{os.sep}2.orbax-checkpoint-tmp") as killed:
        killed.kill_all_once_one_ends()
    assert sorted(path.name.partition("-")[0] for path in checkpoints.iterdir()) == ["1", "2.orbax"]

    with _two_processes([*args, "--resume"], tmp_path, "resumed-") as resumed:
        resumed.wait()
    assert sorted(path.name for path in checkpoints.iterdir()) == ["1", "2", "3"]  # the partial one was removed

    reference = uninterrupted[0] / "two"
    run, expected = (json.loads((folder / "metrics.json").read_text()) for folder in (tmp_path / "run", reference))
    assert [e["step"] for e in run["history"]] == [1, 2, 3]
    np.testing.assert_allclose([e["loss"] for e in run["history"]], [e["loss"] for e in expected["history"]], rtol=1e-5)
    np.testing.assert_allclose(run["results"]["valid_loss"], expected["results"]["valid_loss"], rtol=1e-5)
    spec = Gpt.make(Gpt(**json.loads((reference / "config.json").read_text())["metadata"]["config"])).weight_params
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        training.load_weights(tmp_path / "run", spec),
        training.load_weights(reference, spec),
    )


def test_a_process_that_the_others_never_join_stops_with_one_line(text_file: Path, tmp_path: Path) -> None:
    coordinator = f"127.0.0.1:{_free_port()}"
    started = time.monotonic()
    options = ["--coordinator", coordinator, "--num-processes", "2", "--process-id", "0", "--process-timeout", "2"]
    command = [sys.executable, "-c", "from jaxmake.cli import entry_point; entry_point()", "train", "chars"]
    process = subprocess.run(
        [*command, "--text", str(text_file), "--out", str(tmp_path / "run"), *options],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert time.monotonic() - started < 60  # JAX alone would wait 300 s, then abort with a C++ stack trace
    assert process.returncode == 2, process.stderr
    assert process.stderr == (
        f"jaxmake: error: not all 2 processes joined at --coordinator {coordinator} within --process-timeout 2 s "
        f"(this is process 0): start each of them with the same --coordinator and --num-processes 2 and its own "
        f"--process-id from 0 to 1, and check that process 0's host and port are reachable from every host\n"
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mesh", "data:4"], "mesh 'data:4': 'data:4' is not NAME=SIZE (e.g. data=4)"),
        (["--mesh", "data=2,data=2"], "mesh 'data=2,data=2': the axis 'data' is named twice"),
        (["--mesh", "data=0"], "mesh 'data=0': the size of axis 'data' must be an integer in [1, 999999999], got '0'"),
        (
            ["--mesh", "data=2,model=4"],
            "the mesh data=2,model=4 needs 8 devices, JAX sees 4 (cpu, 1 process); on CPU, set "
            "XLA_FLAGS=--xla_force_host_platform_device_count=8 before JAX starts (`jaxmake train ... "
            "--cpu-devices 8` does it for you)",
        ),
        (
            ["--mesh", "data=4", "--rules", "fsdp", "--dim-model", "6", "--n-heads", "2"],
            "weight `embedding.dict` dimension 1 (size 6, logical axis 'embed') cannot be split over mesh axis "
            "'data' of size 4",
        ),
        (
            ["--mesh", "data=4", "--batch-size", "6"],
            "--batch-size 6 cannot be split over mesh axis 'data' of size 4: give a multiple of 4",
        ),
        (["--rules", "tp"], "--rules tp splits the weights over a mesh: give --mesh too (e.g. --mesh data=2)"),
        (
            ["--num-processes", "2", "--process-id", "0"],
            "training on several processes needs --coordinator, --num-processes and --process-id together "
            "(or $JAXMAKE_COORDINATOR, $JAXMAKE_NUM_PROCESSES, $JAXMAKE_PROCESS_ID); missing --coordinator",
        ),
        (
            ["--coordinator", "localhost", "--num-processes", "2", "--process-id", "0"],
            "--coordinator takes HOST:PORT (e.g. 10.0.0.1:5678), got 'localhost'",
        ),
        (
            ["--coordinator", "localhost:5678", "--num-processes", "2", "--process-id", "2"],
            "--process-id 2 must be in [0, 1] for --num-processes 2",
        ),
        (["--num-processes", "0"], "`Scale.num_processes`=0 must be >= 1"),
        (["--cpu-devices", "0"], "`Scale.cpu_devices`=0 must be >= 1"),
        (["--process-timeout", "0"], "`Scale.process_timeout`=0 must be >= 1"),
    ],
)
def test_bad_scale_options_are_one_line_errors(
    args: list[str], message: str, text_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "chars", "--text", str(text_file), "--out", str(tmp_path / "run"), *args]) == 2
    assert capsys.readouterr().err == f"jaxmake: error: {message}\n"
    assert not (tmp_path / "run").exists()


def test_bad_environment_variables_are_one_line_errors(
    text_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JAXMAKE_COORDINATOR", "127.0.0.1:5678")
    monkeypatch.setenv("JAXMAKE_NUM_PROCESSES", "two")
    assert main(["train", "chars", "--text", str(text_file), "--process-id", "0"]) == 2
    assert (
        capsys.readouterr().err
        == "jaxmake: error: $JAXMAKE_NUM_PROCESSES (for --num-processes) must be an integer >= 1, got 'two'\n"
    )


def test_devices_cannot_change_once_jax_runs(text_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    jax.devices()  # JAX has started in this process
    assert main(["train", "chars", "--text", str(text_file), "--cpu-devices", "2"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(
        "jaxmake: error: --cpu-devices: jax_num_cpu_devices config should be updated before backends"
    )
    assert error.count("\n") == 1
