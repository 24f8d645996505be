"""`jaxmake.export`: contract-derived symbolic shapes, equal results, a fresh process, refusals, the folder."""

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxtyping import Array, Float, Int

import jaxmake as jm
from jaxmake.components import Gpt, Linear
from jaxmake.export import ArtifactError, ExportedProcess, export, flat_weights, load, save

TINY = Gpt(vocab_size=11, n_ctx=8, n_tfe_layers=1, dim_model=8, n_heads=2, mlp_n_hidden=(16,))


@pytest.fixture(scope="module")
def gpt() -> Iterator[jm.Component]:
    mp = pytest.MonkeyPatch()
    mp.setenv(jm.CHECKS_ENV_VAR, "0")  # Gpt's contracts are tested in tests/components; this saves seconds
    yield Gpt.make(TINY)
    mp.undo()


@pytest.fixture(scope="module")
def weights(gpt: jm.Component) -> jm.Weights:
    return jm.make_weights(jax.random.key(0), gpt.weight_params)


@pytest.fixture(scope="module")
def exported(gpt: jm.Component) -> ExportedProcess:
    return export(gpt)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, exported: ExportedProcess, weights: jm.Weights) -> Path:
    return save(tmp_path_factory.mktemp("export") / "gpt", exported, weights, {"vocab": list("abcdefghijk")})


def _tokens(batch: int, length: int) -> np.ndarray:
    return (np.arange(batch * length, dtype=np.int32).reshape(batch, length) * 7) % TINY.vocab_size


def _expected(gpt: jm.Component, weights: jm.Weights, tokens: np.ndarray) -> np.ndarray:
    return np.asarray(jax.jit(jax.vmap(gpt.fixed_pipeline, in_axes=(None, 0)))(weights, jnp.asarray(tokens)))


@pytest.mark.parametrize(("batch", "length"), [(1, 3), (3, 8)])
def test_the_export_equals_the_process_at_two_sizes_of_each_free_dim(
    gpt: jm.Component, weights: jm.Weights, exported: ExportedProcess, batch: int, length: int
) -> None:
    tokens = _tokens(batch, length)
    logits = exported.call(flat_weights(weights), {jm.Input: tokens})[jm.Output]
    assert logits.shape == (batch, length, TINY.vocab_size)
    np.testing.assert_allclose(np.asarray(logits), _expected(gpt, weights, tokens), rtol=1e-6, atol=1e-6)


def test_bound_dims_are_concrete_and_free_dims_symbolic(gpt: jm.Component, exported: ExportedProcess) -> None:
    (flat, inputs), _ = jax.tree.unflatten(exported.exported.in_tree, exported.exported.in_avals)
    outputs = jax.tree.unflatten(exported.exported.out_tree, exported.exported.out_avals)
    assert [str(d) for d in inputs[jm.Input].shape] == ["batch", "T"] and inputs[jm.Input].dtype == jnp.int32
    assert [str(d) for d in outputs[jm.Output].shape] == ["batch", "T", "11"]
    assert type(outputs[jm.Output].shape[2]) is int and outputs[jm.Output].dtype == jnp.float32
    spec = flat_weights(jm.abstract_weights(gpt.weight_params))
    assert {p: tuple(a.shape) for p, a in flat.items()} == {p: s.shape for p, s in spec.items()}
    assert all(type(d) is int for a in flat.values() for d in a.shape)
    assert "encoder.tfe_layer_0.mha.kqv.w" in flat


def test_a_size_beyond_a_limit_is_refused(exported: ExportedProcess, weights: jm.Weights, folder: Path) -> None:
    too_long = {jm.Input: _tokens(2, TINY.n_ctx + 1)}
    with pytest.raises(ValueError, match=r"symbolic shape constraint T <= 8.*'T' = 9"):
        exported.call(flat_weights(weights), too_long)
    reloaded, stored, _ = load(folder)  # gives the deserialized artifact its limits back
    with pytest.raises(ValueError, match=r"symbolic shape constraint T <= 8.*'T' = 9"):
        reloaded.call(stored, too_long)
    plain = jax.export.deserialize(exported.serialize())  # without them, the position table's slice fails first
    with pytest.raises(ValueError, match="Error refining shapes") as refused:
        plain.call(stored, too_long)
    assert "Module shape refinement failed" in str(refused.value.__cause__)


_SERVE = """
import sys
import jax, numpy as np
exported = jax.export.deserialize(open(sys.argv[1] + "/model.jaxexport", "rb").read())
weights = dict(np.load(sys.argv[1] + "/weights.npz"))
for name, (batch, length) in (("small", (1, 3)), ("large", (3, 8))):
    tokens = (np.arange(batch * length, dtype=np.int32).reshape(batch, length) * 7) % 11
    np.save(f"{sys.argv[1]}/{name}.npy", np.asarray(exported.call(weights, {"Input": tokens})["Output"]))
print("jaxmake imported:", any(m.startswith("jaxmake") for m in sys.modules))
"""


def test_the_saved_artifact_serves_in_a_fresh_process_without_jaxmake(
    gpt: jm.Component, weights: jm.Weights, folder: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_SERVE), str(folder)], capture_output=True, text=True, check=True
    )
    assert "jaxmake imported: False" in done.stdout
    for name, (batch, length) in (("small", (1, 3)), ("large", (3, 8))):
        expected = _expected(gpt, weights, _tokens(batch, length))
        np.testing.assert_allclose(np.load(folder / f"{name}.npy"), expected, rtol=1e-6, atol=1e-6)


def test_the_signature_describes_the_ports(folder: Path) -> None:
    signature = json.loads((folder / "signature.json").read_text())
    assert signature["format"] == "jaxmake.export/1" and signature["jaxmake_version"] == jm.__version__
    assert signature["component"] == "Gpt" and signature["process"] == "(Input) -> (Output)"
    assert signature["inputs"] == {"Input": {"shape": "batch, T", "dtype": "int32", "annotation": 'Int[Array, "T"]'}}
    assert signature["outputs"]["Output"]["shape"] == "batch, T, 11"
    assert signature["limits"] == {"T": 8} and signature["dims"]["vocab_size"] == 11
    assert signature["metadata"] == {"vocab": list("abcdefghijk")} and signature["batch"] is True
    assert signature["weights"]["parameters"] == sum(a.size for a in np.load(folder / "weights.npz").values())


def test_load_reads_back_what_save_wrote(folder: Path, weights: jm.Weights) -> None:
    exported, loaded, signature = load(folder)
    assert loaded.keys() == flat_weights(weights).keys() and signature["limits"] == {"T": 8}
    tokens = _tokens(2, 4)
    again = exported.call(loaded, {jm.Input: tokens})[jm.Output]
    np.testing.assert_array_equal(np.load(folder / "weights.npz")["lm_head.w"], np.asarray(weights["lm_head"]["w"]))
    assert again.shape == (2, 4, 11)


def _scale(weights: jm.Weights, x: Float[Array, "T d"]) -> Float[Array, "T d"]:
    scale: Array = weights["s"]
    return x * scale


def _scale_in_float32(weights: jm.Weights, x: Float[Array, "T d"]) -> Float[Array, "T d"]:
    scale: Array = weights["s"]
    return x * scale.astype(x.dtype)


def test_bfloat16_weights_are_stored_as_float32_and_cast_back(tmp_path: Path) -> None:
    spec = {"s": jm.WeightParams((4,), dtype=jnp.bfloat16)}
    scaler = jm.Component.from_pipeline(spec, _scale_in_float32, dims={"d": 4})
    weights = {"s": jnp.asarray([1.5, -2.0, 3.0078125, 0.25], jnp.bfloat16)}
    exported = export(scaler, batch=False)
    save(tmp_path / "bf16", exported, weights)
    reloaded, stored, _ = load(tmp_path / "bf16")
    assert stored["s"].dtype == np.float32
    x = jnp.full((3, 4), 1.001)
    y = reloaded.call(stored, {jm.Input: x})[jm.Output]
    np.testing.assert_array_equal(np.asarray(y), np.asarray(scaler(weights, x)))


def test_a_random_process_is_exported_in_evaluation_mode() -> None:
    def noisy(weights: jm.Weights, x: Float[Array, "T d"], rng: Array | None) -> Float[Array, "T d"]:
        return x if rng is None else x + jax.random.normal(rng, x.shape)

    component = jm.Component.from_pipeline({}, noisy, dims={"d": 2})
    assert jm.pipeline_ports not in component.fixed
    x = jnp.arange(6.0).reshape(1, 3, 2)
    np.testing.assert_array_equal(export(component).call({}, {jm.Input: x})[jm.Output], x)


def test_platforms_are_passed_to_jax() -> None:
    scaler = jm.Component.from_pipeline({"s": jm.WeightParams((4,), init="ones")}, _scale, dims={"d": 4})
    exported = export(scaler, platforms=("cpu", "cuda"))
    assert exported.exported.platforms == ("cpu", "cuda")
    assert exported.call({"s": jnp.ones(4)}, {jm.Input: jnp.ones((2, 3, 4))})[jm.Output].shape == (2, 3, 4)


def _stateful(weights: jm.Weights, x: Float[Array, "T d"], state: jm.Weights, /, *, train: bool) -> Any:
    return x, state


def _component(hint: Any, out: Any = None, fn: Any = lambda x: x, **dims: int) -> jm.Component:
    ports = jm.make_ports({jm.Input: hint}, {jm.Output: hint if out is None else out})
    return jm.Component({}, {ports: lambda weights, inputs: {jm.Output: fn(inputs[jm.Input])}}, dims=dims or None)


@pytest.mark.parametrize(
    ("component", "port", "reason"),
    [
        (
            lambda: jm.Component.from_stateful({}, {}, _stateful, dims={"d": 2}),
            "input port 'State'",
            "it has no array annotation with a known dtype",
        ),
        (lambda: Linear.make(Linear(3, 2)), "input port 'Input'", r"has a dim \(`\*name`, `...` or `_`\)"),
        (lambda: _component(Float[Array, "_ d"], d=2), "input port 'Input'", r"without one fixed axis"),
        (
            lambda: _component(Float[Array, "T"], Float[Array, "T-1"], lambda x: x[1:]),
            "output port 'Output'",
            "has the dim expression `T-1`, which export does not support",
        ),
        (lambda: _component(Int[Array, "batch"]), "input port 'Input'", "has a free dim named `batch`"),
        (
            lambda: _component(Float[Array, "T"], Float[Array, "T K"], lambda x: jnp.stack([x, x], axis=1)),
            "output port 'Output'",
            "has the free dim `K`, which no input has",
        ),
    ],
)
def test_ports_that_cannot_be_exported_are_refused(component: Any, port: str, reason: str) -> None:
    made: jm.Component = component()
    ports = next(p for p in made.processes if jm.Output in p.outputs and p.inputs <= {jm.Input, jm.State})
    with pytest.raises(jm.ArgumentError, match=rf"cannot export component `.*`, process .* -> .*, {port}: .*{reason}"):
        export(made, ports)


def test_a_missing_process_is_refused(gpt: jm.Component) -> None:
    with pytest.raises(jm.ArgumentError, match=r"component `Gpt` has no process \(Input\) -> \(attn\)"):
        export(gpt, jm.make_ports(jm.Input, "attn"))


def test_flat_weights_refuses_colliding_paths() -> None:
    flat = flat_weights({"a": {"b": 1}, "c": {}})
    assert flat == {"a.b": 1} and flat_weights(flat) == flat
    with pytest.raises(jm.ArgumentError, match=r"two weights have the dotted path `a.b`"):
        flat_weights({"a.b": 1, "a": {"b": 2}})


def test_save_refuses_what_it_cannot_write(
    tmp_path: Path, exported: ExportedProcess, weights: jm.Weights, folder: Path
) -> None:
    with pytest.raises(ArtifactError, match=r"`.*gpt` is not empty: export to a new folder, or overwrite it"):
        save(folder, exported, weights)
    (tmp_path / "file").write_text("")
    with pytest.raises(ArtifactError, match=r"`.*file` is a file: an export is written to a folder"):
        save(tmp_path / "file", exported, weights)
    with pytest.raises(jm.ArgumentError, match="`save` takes `metadata` that JSON can hold"):
        save(tmp_path / "new", exported, weights, {"vocab": {1, 2}})
    wrong = {**weights, "lm_head": {"w": jnp.zeros((8, 12))}, "extra": jnp.zeros(1)}
    with pytest.raises(jm.WeightsError) as refused:
        save(tmp_path / "new", exported, wrong)
    assert str(refused.value).splitlines() == [
        "the weights do not fit the exported function:",
        "  missing: lm_head.b (11,) float32",
        "  extra:   extra",
        "  wrong:   lm_head.w is (8, 12) float32, expected (8, 11) float32",
    ]
    assert not (tmp_path / "new").exists()
    save(folder, exported, weights, overwrite=True)  # the same files again


def test_load_names_what_is_missing_or_damaged(tmp_path: Path, folder: Path) -> None:
    with pytest.raises(ArtifactError, match=r"`.*nowhere` is not a folder: expected an export folder with"):
        load(tmp_path / "nowhere")
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("model.jaxexport", "weights.npz", "signature.json"):
        (copy / name).write_bytes((folder / name).read_bytes())
    (copy / "signature.json").write_text("{")
    with pytest.raises(ArtifactError, match=r"signature.json` is damaged: not JSON"):
        load(copy)
    (copy / "signature.json").write_text('{"format": "other/2"}')
    with pytest.raises(ArtifactError, match=r"signature.json` has the format 'other/2', expected 'jaxmake.export/1'"):
        load(copy)
    (copy / "signature.json").write_bytes((folder / "signature.json").read_bytes())
    (copy / "model.jaxexport").write_bytes(b"not an artifact")
    with pytest.raises(ArtifactError, match=r"model.jaxexport` is damaged: jax cannot deserialize it"):
        load(copy)
    (copy / "model.jaxexport").write_bytes((folder / "model.jaxexport").read_bytes())
    (copy / "weights.npz").write_bytes(b"PK not a zip")
    with pytest.raises(ArtifactError, match=r"weights.npz` is damaged: NumPy cannot read it"):
        load(copy)
    (copy / "weights.npz").unlink()
    with pytest.raises(ArtifactError, match=r"`.*copy` holds no weights.npz: is it a folder written by"):
        load(copy)
