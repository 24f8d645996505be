"""The example scripts run."""

import ast
import dataclasses
import importlib.util
import runpy
from pathlib import Path
from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxtyping import Array, Float

import jaxmake as jm
from jaxmake.components import LayerNorm, Linear

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_vit_seed_prints_the_seed_tree_and_runs_a_batch(capsys: pytest.CaptureFixture[str]) -> None:
    runpy.run_path(str(EXAMPLES / "vit_seed.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "'positional_encoding_y': {'encoding_dim_0': (12, 1)}" in out
    assert "'kqv': {'b': (36,), 'w': (12, 36)}" in out
    assert "encodings of a batch of 8 images: (8, 50, 12)" in out


def _res_mlp() -> ModuleType:
    spec = importlib.util.spec_from_file_location("res_mlp", EXAMPLES / "res_mlp.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_res_mlp_block_takes_at_most_eleven_lines() -> None:
    tree = ast.parse((EXAMPLES / "res_mlp.py").read_text())
    block = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "ResMlp")
    docstring = block.body[0]
    assert isinstance(docstring, ast.Expr) and isinstance(docstring.value, ast.Constant)
    source = (EXAMPLES / "res_mlp.py").read_text().splitlines()[block.lineno - 1 : block.end_lineno]
    skipped = range(docstring.lineno - block.lineno, docstring.end_lineno - block.lineno + 1)  # type: ignore[operator]
    lines = [line for i, line in enumerate(source) if line.strip() and i not in skipped]
    assert len(lines) <= 11, "\n".join(lines)


def test_the_res_mlp_block_checks_at_make_time_and_trains() -> None:
    res_mlp = _res_mlp()
    with jm.recorded_contracts() as checked:
        block = res_mlp.ResMlp.make(res_mlp.ResMlp(dim_model=4, n_hidden=8))
    assert checked == [
        "ResMlp.norm: (Input) -> (Output)",
        "ResMlp.fc1: (Input) -> (Output)",
        "ResMlp.fc2: (Input) -> (Output)",
        "ResMlp: (Input) -> (Output)",
    ]
    assert jax.tree.map(jnp.shape, jm.abstract_weights(block.weight_params)) == {
        "norm": {"a": (4,), "b": (4,)},
        "fc1": {"b": (8,), "w": (4, 8)},
        "fc2": {"b": (4,), "w": (8, 4)},
    }
    with pytest.raises(jm.ShapeError, match=r"(?s)^ShapeError in ResMlp, .*bound:    dim_model=4 \(ResMlp.dim_model\)"):
        block.checked_pipeline(jm.abstract_weights(block.weight_params), jnp.zeros((3, 5)), None)

    @dataclasses.dataclass(frozen=True)
    class Loose:  # a structural config: nothing validates it before `make`
        dim_model: int
        n_hidden: int

    with pytest.raises(jm.ConfigError, match=r"^`Linear.n_out`=0 must be >= 1$"):
        res_mlp.ResMlp.make(Loose(dim_model=4, n_hidden=0))

    res_mlp_class: Any = res_mlp.ResMlp

    class SlippedResMlp(res_mlp_class):  # type: ignore[misc]
        """The classic slip: `fc2` maps back to `n_hidden`, not `dim_model`."""

        @classmethod
        def make(cls, config: Any) -> jm.Component:
            d, h = config.dim_model, config.n_hidden
            c = jm.make_children(norm=LayerNorm(d), fc1=Linear(d, h), fc2=Linear(h, h))

            def block(weights: jm.Weights, x: Float[Array, "*batch dim_model"]) -> Float[Array, "*batch dim_model"]:
                return x + c.fc2(weights, jax.nn.gelu(c.fc1(weights, c.norm(weights, x))))

            return jm.Component.from_pipeline(c.weight_params, block, dims=config)

    with pytest.raises(jm.ShapeError, match=r"^ShapeError in SlippedResMlp, process \(Input\) -> \(Output\)\n"):
        SlippedResMlp.make(SlippedResMlp(dim_model=4, n_hidden=8))

    with jax.numpy_dtype_promotion("standard"):  # optax's Adam mixes int32 counts with Python floats
        losses = res_mlp.train(res_mlp.ResMlp(dim_model=4, n_hidden=16), steps=30)
    assert all(np.isfinite(losses)) and np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


def test_lora_chars_fine_tunes_the_adapters_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("lora_chars", EXAMPLES / "lora_chars.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tiny = ["--base-steps", "2", "--lora-steps", "2", "--dim-model", "16", "--n-tfe-layers", "1", "--n-ctx", "16"]
    figures = module.main([*tiny, "--batch-size", "4", "--out", str(tmp_path)])
    assert figures["base_unchanged"] is True
    # rank 4 on kqv [16, 48], out [16, 16], mlp [16, 64] and [64, 16]: 4 * (n_in + n_out) each
    assert figures["trainable_parameters"] == 4 * (64 + 32 + 80 + 80) and 0 < figures["trainable_fraction"] < 0.2
    assert np.isfinite(figures["valid_loss_before"]) and np.isfinite(figures["valid_loss_after"])
    assert "base weights bit-identical after fine-tuning: True" in capsys.readouterr().out
