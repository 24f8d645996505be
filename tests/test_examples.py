"""The example scripts run."""

import runpy
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_vit_seed_prints_the_seed_tree_and_runs_a_batch(capsys: pytest.CaptureFixture[str]) -> None:
    runpy.run_path(str(EXAMPLES / "vit_seed.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "'positional_encoding_y': {'encoding_dim_0': (12, 1)}" in out
    assert "'kqv': {'b': (36,), 'w': (12, 36)}" in out
    assert "encodings of a batch of 8 images: (8, 50, 12)" in out
