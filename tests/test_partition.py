"""Logical axes -> shardings, and weights created directly sharded (4 fake CPU devices)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec

import jaxmake as jm
from jaxmake.components import Gpt
from jaxmake.sharding import make_mesh

TP = {"mlp": "model", "vocab": "model"}
FSDP = {"embed": "data"}


@pytest.fixture(scope="module")
def mesh() -> jax.sharding.Mesh:
    assert jax.device_count() >= 4, "conftest.py asks XLA for 4 CPU devices"
    return make_mesh({"data": 2, "model": 2})


def test_partition_specs_follow_the_rules() -> None:
    spec = jm.WeightParams((8, 16), axes=("embed", "mlp"))
    assert jm.partition_spec(spec, TP) == PartitionSpec(None, "model")
    assert jm.partition_spec(spec, {**TP, **FSDP}) == PartitionSpec("data", "model")
    assert jm.partition_spec(spec, {"embed": ("data", "model")}) == PartitionSpec(("data", "model"), None)
    assert jm.partition_spec(jm.WeightParams((8,)), TP) == PartitionSpec()


@pytest.mark.parametrize("rules", [TP, FSDP, {**TP, **FSDP}], ids=["tp", "fsdp", "fsdp+tp"])
def test_sharded_weights_equal_unsharded_ones_and_hold_only_shards(rules: jm.Rules, mesh: jax.sharding.Mesh) -> None:
    gpt = Gpt.make(Gpt(vocab_size=16, n_ctx=8, n_tfe_layers=1, dim_model=8, n_heads=2, mlp_n_hidden=(16,)))
    key = jax.random.key(3)
    plain = jm.make_weights(key, gpt.weight_params)
    sharded = jm.make_weights(key, gpt.weight_params, mesh=mesh, rules=rules)
    jax.tree.map(np.testing.assert_array_equal, plain, sharded)
    expected = jm.weight_shardings(gpt.weight_params, mesh, rules)
    for array, sharding in zip(jax.tree.leaves(sharded), jax.tree.leaves(expected)):
        assert array.sharding.is_equivalent_to(sharding, array.ndim)
        full = int(np.prod(array.shape))
        parts = int(np.prod([mesh.shape[a] for a in jax.tree.leaves(tuple(sharding.spec))]))
        assert all(shard.data.size == full // parts for shard in array.addressable_shards)
    w = sharded["lm_head"]["w"]  # [dim_model, vocab] with axes ("embed", "mlp")
    rows, cols = 8 // (2 if "embed" in rules else 1), 16 // (2 if "mlp" in rules else 1)
    assert {shard.data.shape for shard in w.addressable_shards} == {(rows, cols)}


def test_impossible_layouts_are_one_line_errors(mesh: jax.sharding.Mesh) -> None:
    spec = {"mlp": {"layer_0": {"w": jm.WeightParams((6, 3), axes=("embed", "mlp"))}}}
    with pytest.raises(jm.ShardingError) as info:
        jm.weight_shardings(spec, mesh, TP)
    assert str(info.value) == (
        "weight `mlp.layer_0.w` dimension 1 (size 3, logical axis 'mlp') cannot be split over mesh axis 'model' "
        "of size 2"
    )
    with pytest.raises(
        jm.ShardingError, match=r"the rules use mesh axes \['tensor'\], but the mesh has only \['data', 'model'\]"
    ):
        jm.make_weights(jax.random.key(0), spec, mesh=mesh, rules={"mlp": "tensor"})
    with pytest.raises(TypeError, match="takes `mesh` and `rules` together"):
        jm.make_weights(jax.random.key(0), spec, mesh=mesh)


def test_sharded_arrays_compute_like_unsharded_ones(mesh: jax.sharding.Mesh) -> None:
    gpt = Gpt.make(Gpt(vocab_size=16, n_ctx=8, n_tfe_layers=1, dim_model=8, n_heads=2, mlp_n_hidden=(16,)))
    key = jax.random.key(1)
    tokens = jnp.arange(8) % 16
    plain = gpt.fixed_pipeline(jm.make_weights(key, gpt.weight_params), tokens)
    sharded = jax.jit(gpt.fixed_pipeline)(
        jm.make_weights(key, gpt.weight_params, mesh=mesh, rules={**TP, **FSDP}), tokens
    )
    np.testing.assert_allclose(plain, sharded, rtol=1e-5, atol=1e-5)
