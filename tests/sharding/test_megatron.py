"""The library's tensor-parallel layout (Megatron-LM): the collectives of a sharded forward pass.

Counted in the optimized HLO of a jitted, vmapped forward on a 2x2 mesh (4 fake CPU
devices, `conftest.py`), the batch split over `data` and the weights laid out by the
`RULES` presets: under `tp` an MLP block and an attention block each end in one
all-reduce over `model`, and nothing else moves but the attention's fused `kqv` weight.
"""

import re
from collections import Counter

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import jaxmake as jm
from jaxmake.components import Mlp, SelfMultiHeadAttn, TransformerLayer
from jaxmake.sharding import RULES, make_mesh

DIM, HIDDEN, HEADS, T = 16, 32, 4, 8
COLLECTIVE = re.compile(
    r"= (\w+\[[\d,]*\])\S* (all-reduce|all-gather|all-to-all|collective-permute|reduce-scatter)(?:-start)?\("
)
"""An HLO instruction that moves data between devices: its result's type and shape, then its opcode."""


@pytest.fixture(scope="module")
def mesh() -> Mesh:
    assert jax.device_count() >= 4, "conftest.py asks XLA for 4 CPU devices"
    return make_mesh({"data": 2, "model": 2})


def collectives(component: jm.Component, mesh: Mesh, rules: jm.Rules) -> list[tuple[str, str]]:
    """Every collective of the compiled forward pass of 2 sequences, as `(opcode, result shape)`.

    For example `("all-reduce", "f32[1,8,16]")`: one sequence per device of `data`.
    """
    shardings = jm.weight_shardings(component.weight_params, mesh, rules)
    abstract = jm.abstract_weights(component.weight_params)
    weights = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
    x = jax.ShapeDtypeStruct((2, T, DIM), jnp.float32, sharding=NamedSharding(mesh, PartitionSpec("data")))
    forward = jax.jit(jax.vmap(component.fixed_pipeline, in_axes=(None, 0)))
    hlo = forward.lower(weights, x).compile().as_text() or ""
    return [(opcode, result) for result, opcode in COLLECTIVE.findall(hlo)]


def test_an_mlp_block_ends_in_one_all_reduce(mesh: Mesh) -> None:
    mlp = Mlp.make(Mlp(DIM, (HIDDEN,), DIM))
    specs = jm.weight_shardings(mlp.weight_params, mesh, RULES["tp"])
    assert specs["layer_0"]["w"].spec == PartitionSpec(None, "model")  # column parallel
    assert specs["layer_1"]["w"].spec == PartitionSpec("model", None)  # row parallel
    assert collectives(mlp, mesh, RULES["tp"]) == [("all-reduce", f"f32[1,{T},{DIM}]")]  # 1 sequence per device


def test_an_attention_block_ends_in_one_all_reduce_and_gathers_only_its_kqv_weight(mesh: Mesh) -> None:
    """The columns of `kqv` are `[q | k | v]`, so a device's contiguous share is not whole heads.

    XLA gathers the weight and bias (their size, once per step) and each device keeps its
    heads' columns; no token's `q, k, v` moves.
    """
    mha = SelfMultiHeadAttn.make(SelfMultiHeadAttn(HEADS, DIM, DIM))
    kqv_w, kqv_b, heads_out = f"f32[{DIM},{3 * DIM}]", f"f32[{3 * DIM}]", f"f32[1,{T},{DIM}]"
    expected = [("all-gather", kqv_w), ("all-gather", kqv_b), ("all-reduce", heads_out)]
    assert sorted(collectives(mha, mesh, RULES["tp"])) == sorted(expected)


@pytest.mark.parametrize(("preset", "all_reduces"), [("dp", 0), ("tp", 2)])
def test_a_transformer_layer_needs_one_all_reduce_per_block(preset: str, all_reduces: int, mesh: Mesh) -> None:
    layer = TransformerLayer.make(TransformerLayer(HEADS, DIM, (HIDDEN,)))
    seen = Counter(opcode for opcode, _ in collectives(layer, mesh, RULES[preset]))
    assert seen["all-reduce"] == all_reduces
    assert set(seen) <= {"all-reduce", "all-gather"}
