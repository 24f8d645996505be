"""The 8-device runs behind `test_eight_devices.py`, in a process of their own.

XLA fixes the number of fake CPU devices when JAX starts, and the test session has 4
(`conftest.py`), so this script asks for 8 before it imports JAX. It trains a tiny `Gpt`
and a tiny `Vit` for `CONFIG.steps` steps on one device and on each layout of `LAYOUTS`,
makes the `Gpt`'s weights directly sharded on a 4x2 mesh, and restores the `Gpt`'s 4x2
checkpoint onto 8x1 and onto one device. It asserts nothing itself: it writes what it saw
to the folder given as its argument, and the test asserts on that:

* `results.json`:
  - `"training"`: by case `"<model>/<layout>"`, the history's `"losses"` (one per step),
    the single-device run's `"single_losses"`, and the final weights' partition specs
    (`"specs"`) next to those the rules ask for (`"expected_specs"`);
  - `"init"`: by weight path, its `"shape"`, its `"spec"` and the rules' `"expected_spec"`,
    the `"shard_shapes"` of its addressable shards, and `"bit_equal"`: whether its values
    equal those of the unsharded `make_weights`;
  - `"restore"`: by target (`"8x1"`, `"single"`), the sizes of the restored weights'
    `"device_sets"`, and (8x1) their `"specs"` and `"expected_specs"`.

  A spec is a list with one entry per dim: `null`, a mesh axis name, or a list of names.
* `<name>.npz`, arrays by dotted path (`np.load`): the final weights `<model>.single` and
  `<model>.<layout>` and optimizer states `<model>.<layout>_opt`; the restored
  `restore.<target>` and `restore.<target>_opt`; and `restore.loaded`, from `load_weights`.

    python tests/sharding/_eight_devices.py OUT_DIR     # about 90 s of CPU
"""

import os

if __name__ == "__main__":  # not when imported (pytest collects this file for doctests)
    # Backend optimisation off: a third less compile time; both sides of every comparison run so.
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax import Array
from jax.sharding import Mesh, PartitionSpec

import jaxmake as jm
from jaxmake.components import LOSS_PORTS, Gpt, Vit, softmax_cross_entropy
from jaxmake.sharding import RULES, make_mesh
from jaxmake.training import Batch, Task, TrainConfig, load_weights, shuffled_batches, train

LAYOUTS: Mapping[str, tuple[tuple[int, int], str]] = {
    "dp": ((8, 1), "dp"),
    "fsdp": ((8, 1), "fsdp"),
    "tp": ((2, 4), "tp"),
    "fsdp_tp": ((4, 2), "fsdp_tp"),
}
"""Layout name -> (mesh shape `(data, model)`, rule preset of `jaxmake.sharding.RULES`)."""

CONFIG = TrainConfig(steps=3, batch_size=8, learning_rate=1e-2, log_every=1, eval_every=3, checkpoint_every=3)
"""Three steps, each logged; the batch of 8 splits over the `data` axis of every layout."""

GPT = Gpt(vocab_size=16, n_ctx=8, n_tfe_layers=1, n_heads=4, dim_model=16, mlp_n_hidden=(32,))
VIT = Vit(
    n_tfe_layers=1,
    n_heads=4,
    dim_model=16,
    mlp_n_hidden=(32,),
    hwc=(8, 8, 1),
    n_patches_side=2,
    mlp_n_hidden_patches=(16,),
    dict_size_output=8,
    positional_encode_strategy="sum",
)
"""Tiny models: every dim a layout splits divides its mesh axis."""


def _mesh(shape: tuple[int, int]) -> Mesh:
    return make_mesh({"data": shape[0], "model": shape[1]})


def gpt_task(rng: np.random.Generator) -> tuple[jm.Component, Task]:
    """The `Gpt`, and next-token prediction on 64 random sequences of `n_ctx + 1` tokens."""
    gpt = Gpt.make(GPT)
    loss_of = jax.vmap(gpt.get_process(LOSS_PORTS), in_axes=(None, 0, None))
    tokens = rng.integers(0, GPT.vocab_size, (64, GPT.n_ctx + 1)).astype(np.int32)

    def loss(weights: jm.Weights, batch: Batch, key: Array) -> tuple[Array, dict[str, Array]]:
        inputs = {jm.Input: batch["tokens"][:, :-1], "targets": batch["tokens"][:, 1:]}
        return loss_of(weights, inputs, None)["loss"].mean(), {}

    return gpt, Task(loss, shuffled_batches({"tokens": tokens}, CONFIG.batch_size, CONFIG.seed))


def vit_task(rng: np.random.Generator) -> tuple[jm.Component, Task]:
    """The `Vit`, and the classification of 64 random images `[8, 8, 1]` into 8 random classes."""
    vit = Vit.make(VIT)
    logits_of = jax.vmap(vit.get_process(jm.make_ports(jm.Input, "logits")), in_axes=(None, 0, None))
    data = {
        "x": rng.normal(size=(64, *VIT.hwc)).astype(np.float32),
        "y": rng.integers(0, VIT.dict_size_output, 64).astype(np.int32),
    }

    def loss(weights: jm.Weights, batch: Batch, key: Array) -> tuple[Array, dict[str, Array]]:
        logits = logits_of(weights, {jm.Input: batch["x"]}, None)["logits"]
        return softmax_cross_entropy(logits, batch["y"]).mean(), {}

    return vit, Task(loss, shuffled_batches(data, CONFIG.batch_size, CONFIG.seed))


def _paths(tree: Any) -> dict[str, Any]:
    """The leaves of a tree by dotted path (`encoder.norm.a`; sequence items by index)."""
    leaves = jax.tree.leaves_with_path(tree)
    return {".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path): leaf for path, leaf in leaves}


def _save(out: Path, name: str, tree: Any) -> None:
    arrays: dict[str, Any] = {path: np.asarray(leaf) for path, leaf in _paths(tree).items()}
    np.savez(out / f"{name}.npz", **arrays)


def _spec(spec: PartitionSpec, ndim: int) -> list[Any]:
    """A partition spec as JSON, one entry per dim (`None` for a replicated one)."""
    return [list(axes) if isinstance(axes, tuple) else axes for axes in (*spec, *(None,) * (ndim - len(spec)))]


def _layout(weights: jm.Weights, shardings: Any) -> dict[str, dict[str, list[Any]]]:
    """The weights' partition specs and the ones of `shardings` (what the rules ask for)."""
    arrays, expected = _paths(weights), _paths(shardings)
    return {
        "specs": {path: _spec(array.sharding.spec, array.ndim) for path, array in arrays.items()},
        "expected_specs": {path: _spec(expected[path].spec, array.ndim) for path, array in arrays.items()},
    }


def check_training(out: Path, name: str, component: jm.Component, task: Task) -> dict[str, Any]:
    """Train on one device and on every layout of `LAYOUTS`, from the same initial weights."""
    initial = jm.make_weights(jax.random.key(0), component.weight_params)
    single = train(task, initial, CONFIG, out / name / "single", progress="off")
    _save(out, f"{name}.single", single.weights)
    results = {}
    for layout, (shape, preset) in LAYOUTS.items():
        mesh = _mesh(shape)
        shardings = jm.weight_shardings(component.weight_params, mesh, RULES[preset])
        # The values of `make_weights(..., mesh=mesh, rules=...)` (see `check_init`), without its
        # compiles: one small program per weight and layout.
        sharded = train(
            task, jax.device_put(initial, shardings), CONFIG, out / name / layout, progress="off", mesh=mesh
        )
        _save(out, f"{name}.{layout}", sharded.weights)
        _save(out, f"{name}.{layout}_opt", sharded.opt_state)
        results[f"{name}/{layout}"] = {
            "losses": [entry["loss"] for entry in sharded.history],
            "single_losses": [entry["loss"] for entry in single.history],
            **_layout(sharded.weights, shardings),
        }
    return results


def check_init(gpt: jm.Component) -> dict[str, Any]:
    """The `Gpt`'s weights made on a 4x2 mesh under `fsdp_tp`: each one's shards, against the unsharded init."""
    key, mesh, rules = jax.random.key(3), _mesh((4, 2)), RULES["fsdp_tp"]
    plain = _paths(jm.make_weights(key, gpt.weight_params))
    specs = {path: jm.partition_spec(spec, rules) for path, spec in _paths(gpt.weight_params).items()}
    return {
        path: {
            "shape": list(array.shape),
            "spec": _spec(array.sharding.spec, array.ndim),
            "expected_spec": _spec(specs[path], array.ndim),
            "shard_shapes": [list(shard.data.shape) for shard in array.addressable_shards],
            "bit_equal": bool(np.array_equal(np.asarray(array), np.asarray(plain[path]))),
        }
        for path, array in _paths(jm.make_weights(key, gpt.weight_params, mesh=mesh, rules=rules)).items()
    }


def check_restore(out: Path, gpt: jm.Component, task: Task) -> dict[str, Any]:
    """Restore the checkpoint of the `Gpt`'s 4x2 `fsdp_tp` run onto 8x1 and onto one device.

    `train(..., resume=True)` restores onto the shardings of the weights it is given and,
    with its `CONFIG.steps` already done, returns; `load_weights` reads the weights alone.
    """
    run, mesh = out / "gpt" / "fsdp_tp", _mesh((8, 1))
    weights = jm.make_weights(jax.random.key(1), gpt.weight_params)  # other values: only the layout is used
    shardings = jm.weight_shardings(gpt.weight_params, mesh, RULES["fsdp_tp"])
    results: dict[str, Any] = {}
    targets = {"8x1": (jax.device_put(weights, shardings), mesh), "single": (weights, None)}
    for target, (given, target_mesh) in targets.items():
        restored = train(task, given, CONFIG, run, resume=True, progress="off", mesh=target_mesh)
        _save(out, f"restore.{target}", restored.weights)
        _save(out, f"restore.{target}_opt", restored.opt_state)
        device_sets = sorted({len(array.sharding.device_set) for array in jax.tree.leaves(restored.weights)})
        results[target] = {"device_sets": device_sets, **(_layout(restored.weights, shardings) if target_mesh else {})}
    _save(out, "restore.loaded", load_weights(run, gpt.weight_params))
    return results


def main(out: Path) -> None:
    if jax.device_count() != 8:
        sys.exit(f"{__file__}: needs 8 devices; with XLA_FLAGS={os.environ['XLA_FLAGS']!r} JAX sees {jax.devices()}")
    jax.config.update("jax_numpy_dtype_promotion", "strict")  # as in the test session
    rng = np.random.default_rng(0)
    (gpt, gpt_training), (vit, vit_training) = gpt_task(rng), vit_task(rng)
    results = {
        "training": check_training(out, "gpt", gpt, gpt_training) | check_training(out, "vit", vit, vit_training),
        "init": check_init(gpt),
        "restore": check_restore(out, gpt, gpt_training),  # of the 4x2 run of `check_training`
    }
    (out / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: python {sys.argv[0]} OUT_DIR")
    main(Path(sys.argv[1]))
