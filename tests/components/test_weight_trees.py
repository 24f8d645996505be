"""The weight trees are a file format: keys, shapes and values stay what they were.

`weight_trees.json` was written by the code before the authoring rewrite (children named
once, issue 10): for each model, every leaf's path, shape, dtype, sum, absolute sum and first
values, drawn by `make_weights(jax.random.key(0), ...)`. Today's code must give the same, so
that checkpoints of earlier runs load and the same key draws the same model.
"""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmake as jm
from jaxmake.components import Gpt, Vit

PINNED = json.loads((Path(__file__).parent / "weight_trees.json").read_text())
MODELS = {
    "Vit": lambda: Vit.make(Vit()),
    "Vit_scan_sum": lambda: Vit.make(Vit(scan_layers=True, positional_encode_strategy="sum", n_tfe_layers=2)),
    "Gpt": lambda: Gpt.make(Gpt()),
    "Gpt_universal": lambda: Gpt.make(
        Gpt(universal=True, n_tfe_layers=3, dim_model=16, mlp_n_hidden=(32,), vocab_size=11, n_ctx=8)
    ),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_weight_trees_and_values_are_unchanged(name: str) -> None:
    weights = jm.make_weights(jax.random.key(0), MODELS[name]().weight_params)
    pinned = dict(PINNED[name])
    assert str(jax.tree.map(jnp.shape, weights)) == pinned.pop("__tree__")
    leaves = {
        jax.tree_util.keystr(path, simple=True, separator="."): np.asarray(value, np.float64)
        for path, value in jax.tree_util.tree_flatten_with_path(weights)[0]
    }
    assert sorted(leaves) == sorted(pinned)
    for path, (shape, dtype, total, absolute, first) in pinned.items():
        value = leaves[path]
        assert list(value.shape) == shape and str(jax.tree.leaves(jm.get_at(weights, path))[0].dtype) == dtype, path
        np.testing.assert_allclose([value.sum(), np.abs(value).sum()], [total, absolute], rtol=1e-5, err_msg=path)
        np.testing.assert_allclose(value.ravel()[:3], first, rtol=1e-5, atol=1e-7, err_msg=path)
