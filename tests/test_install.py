"""The core install is light: `pip install jaxmake` brings jax, a few small typing packages
and flatbuffers (which `jax.export` needs to serialize, for `jaxmake.export`); the command
line and training stack come with the `train` extra.

The core modules are imported in subprocesses whose import system refuses the extra's
packages (and hypothesis), as on a machine where they are not installed.
"""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from jaxmake.cli import TRAIN_EXTRA_MODULES

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

CORE = {"jax", "jaxlib", "numpy", "beartype", "jaxtyping", "annotated-types", "flatbuffers"}
TRAIN = {"optax", "orbax-checkpoint", "tyro", "tqdm", "matplotlib", "scikit-learn"}
BLOCKED = ("optax", "orbax", "tyro", "tqdm", "matplotlib", "sklearn", "hypothesis")

# A finder ahead of all others: importing a blocked top-level name (or anything under it)
# raises ModuleNotFoundError, and every attempt is recorded in `refused`.
BLOCKER = f"""
import importlib.abc, sys
refused = []
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {BLOCKED!r}:
            refused.append(name)
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, Blocker())
"""

MESSAGE = (
    "jaxmake: error: the jaxmake command needs the `train` extra, missing here: {missing};"
    ' install it with: pip install "jaxmake[train]"\n'
)


def _names(requirements: list[str]) -> set[str]:
    names = set()
    for requirement in requirements:
        match = re.match(r"[A-Za-z0-9._-]+", requirement)
        assert match is not None, requirement
        names.add(match.group().lower().replace("_", "-"))
    return names


def _run_blocked(code: str, *args: str, blocked: tuple[str, ...] = BLOCKED) -> subprocess.CompletedProcess[str]:
    blocker = BLOCKER.replace(repr(BLOCKED), repr(blocked))
    return subprocess.run(
        [sys.executable, "-c", blocker + code, *args], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def test_the_core_dependencies_are_exactly_the_light_set() -> None:
    assert _names(PROJECT["dependencies"]) == CORE


def test_the_train_extra_holds_the_training_stack_and_dev_pulls_it() -> None:
    extras = PROJECT["optional-dependencies"]
    assert _names(extras["train"]) == TRAIN
    assert set(TRAIN_EXTRA_MODULES.values()) == TRAIN  # what the command checks before it starts
    assert "jaxmake[train]" in extras["dev"]
    assert "jaxmake[train]" in extras["bench"]  # benchmarks/ train and run the command
    assert PROJECT["scripts"] == {"jaxmake": "jaxmake.cli:entry_point"}


def test_the_core_imports_and_makes_weights_without_the_train_extra() -> None:
    result = _run_blocked(
        """
import jax
import jaxmake as jm
import jaxmake.components
import jaxmake.sharding
from jaxmake.components import Linear
weights = jm.make_weights(jax.random.key(0), Linear.make(Linear(3, 4)).weight_params)
print(sorted((path, tuple(array.shape)) for path, array in weights.items()))
print(sorted(jaxmake.sharding.RULES))
print(refused)
"""
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "[('b', (4,)), ('w', (3, 4))]",
        "['dp', 'fsdp', 'fsdp_tp', 'tp']",
        "[]",  # not even tried: nothing falls back silently
    ]


@pytest.mark.parametrize(
    ("blocked", "missing"),
    [
        (BLOCKED, "optax, orbax-checkpoint, tyro, tqdm, matplotlib, scikit-learn"),
        (("sklearn",), "scikit-learn"),
    ],
)
def test_the_command_without_the_train_extra_is_one_line_and_exit_2(blocked: tuple[str, ...], missing: str) -> None:
    result = _run_blocked("from jaxmake.cli import entry_point; entry_point()", "train", "digits", blocked=blocked)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == MESSAGE.format(missing=missing)
