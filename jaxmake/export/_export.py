"""Export a process of a component with `jax.export`, and save it with its weights for serving.

The exported function is `(weights, inputs) -> outputs`: `weights` is the flat dict
`{dotted path: array}` of `flat_weights`, `inputs` and `outputs` are dicts keyed by port
name. Its shapes come from the ports' jaxtyping annotations: a bound dim (`vocab_size`,
from the config) stays a number, a free dim (`T`) becomes a symbolic dim constrained by the
component's `limits` (`T <= n_ctx`), and `batch=True` adds a leading symbolic `batch` axis
to every input and output. Serving then needs jax and numpy only, not jaxmake:

    exported = jax.export.deserialize(open("model.jaxexport", "rb").read())
    weights = dict(np.load("weights.npz"))
    logits = exported.call(weights, {"Input": tokens})["Output"]
"""

import dataclasses
import json
import math
import os
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import jax
import numpy as np

import jaxmake as jm
from jaxmake._annotations import annotation_str, build_dtype, dims_of, is_array_annotation

FORMAT = "jaxmake.export/1"
"""The `format` written to `signature.json`; `load` reads only this one."""
ARTIFACT = "model.jaxexport"
"""The serialized `jax.export.Exported` (`exported.serialize()`)."""
WEIGHTS = "weights.npz"
"""The flat weights (`flat_weights`), as NumPy's `.npz`."""
SIGNATURE = "signature.json"
"""Ports with symbolic shapes and dtypes, bound dims, limits, versions and the caller's metadata."""
BATCH = "batch"
"""The name of the leading symbolic axis that `batch=True` adds to every input and output."""

_STORED_AS_FLOAT32 = "float32"
"""NumPy's `.npz` keeps no dtype that NumPy lacks (bfloat16, float8 load back as raw `|V2`
bytes): such weights are stored as float32, which holds them exactly, and the exported
function casts them back to their own dtype first."""


class ArtifactError(jm.JaxMakeError, OSError):
    """An export folder that cannot be written or read: the message says which file, what was expected and seen."""


@dataclasses.dataclass(frozen=True)
class ExportedProcess:
    """A process exported by `export`: the `jax.export.Exported`, and what it cannot keep.

    jax serializes neither the constraints of the symbolic dims nor the annotations, so
    `save` takes them from here into `signature.json`.

    Attributes:
        exported: the `jax.export.Exported` of `(weights, inputs) -> outputs`.
        component: the component's path.
        process: its ports, as `str(ports)`.
        batch: whether every input and output has the leading `batch` axis.
        annotations: each port's annotation, as text.
        dims: the bound dims (concrete in the shapes).
        limits: the largest size of each limited free dim.
    """

    exported: jax.export.Exported
    component: str
    process: str
    batch: bool
    annotations: Mapping[str, str]
    dims: Mapping[str, int]
    limits: Mapping[str, int]

    def call(self, weights: Mapping[str, Any], inputs: Mapping[str, Any]) -> dict[str, jax.Array]:
        """`{port: array}` of the exported process on `weights` (nested or flat) and `inputs` (`{port: array}`)."""
        outputs: dict[str, jax.Array] = self.exported.call(dict(jm.flat_weights(weights)), dict(inputs))
        return outputs

    def serialize(self) -> bytearray:
        """The artifact's bytes (`jax.export.deserialize` reads them back)."""
        return self.exported.serialize()


def export(
    component: jm.Component,
    ports: jm.ProcessPorts = jm.pipeline_ports,
    *,
    batch: bool = True,
    platforms: Sequence[str] | None = None,
) -> ExportedProcess:
    """Export one process of a component as `(weights, inputs) -> outputs` with `jax.export`.

    The shapes come from the ports' annotations. Bound dims (`component.dims`) stay
    concrete; each free dim becomes a symbolic dim of one shared scope, constrained by
    `component.limits` (`T <= n_ctx`); dtypes are those the annotations allow (the first
    of float32, int32, bool, ...). With `batch=True` every input and output gains a
    leading symbolic axis `batch` and the per-example process is `jax.vmap`ped, the
    weights shared. A random process is exported in evaluation mode (`rng=None`).

    Calling the artifact with a size beyond a limit fails before anything runs: the
    `Exported` that this returns (and the one `load` returns) raises `ValueError: Input
    shapes do not match the symbolic shape constraint T <= 8 ...`. One deserialized by
    plain JAX has lost its constraints (jax does not serialize them): it still refuses
    such a size, when it compiles for it (`ValueError: Error refining shapes`), but the
    cause it gives is the first operation that cannot take that size (for `Gpt`, the slice
    of its position table), or the constraint's own message if every operation can.

    Args:
        component: any component.
        ports: the process to export, by its port names.
        batch: add the leading `batch` axis.
        platforms: the platforms to lower for (`("cpu", "cuda")`); by default, JAX's
            default backend here.

    Returns:
        An `ExportedProcess`: its `exported` is the `jax.export.Exported`, whose
        `call(weights, inputs)` takes `weights` as `flat_weights` gives them (weights of a
        dtype NumPy lacks, bfloat16, as float32; see `save`) and `inputs` `{port: array}`
        with the shapes of its `in_avals`, and returns `{port: array}`; its `serialize()`
        gives the bytes. `save` writes it with the weights for serving.

    Raises:
        ArgumentError: the component has no such process, or a port cannot be exported:
            no array annotation (a `State` port), a variadic dim (`*batch`), an anonymous
            dim (`_`), a dim expression (`T-1`), a free dim named `batch` (with
            `batch=True`), or an output dim that no input determines.

    Example:
        >>> from jaxtyping import Array, Float
        >>> def scale(weights: jm.Weights, x: Float[Array, "T d"]) -> Float[Array, "T d"]:
        ...     return x * weights["s"]
        >>> scaler = jm.Component.from_pipeline({"s": jm.WeightParams((4,))}, scale, dims={"d": 4}, limits={"T": 16})
        >>> exported = export(scaler)
        >>> exported.exported.in_avals, exported.exported.out_avals
        ((ShapedArray(float32[4]), ShapedArray(float32[batch,T,4])), (ShapedArray(float32[batch,T,4]),))
        >>> exported.call({"s": jnp.full(4, 2.0)}, {"Input": jnp.ones((3, 5, 4))})["Output"].shape
        (3, 5, 4)
    """
    stored = next(p for p in component.processes if p == ports) if ports in component.processes else ports
    process = component.get_process(stored)  # raises, listing the processes, if there is none
    where = f"cannot export component `{component.path}`, process {stored}"
    free = _free_dims(stored, component.dims, batch, where)
    names = [BATCH] * batch + free
    constraints = [f"{name} <= {component.limits[name]}" for name in free if name in component.limits]
    scope = jax.export.SymbolicScope(constraints)
    symbols = dict(zip(names, jax.export.symbolic_shape(", ".join(names), scope=scope) if names else ()))
    leading = (symbols[BATCH],) if batch else ()
    inputs = {
        name: jax.ShapeDtypeStruct((*leading, *_shape(hint, component.dims, symbols)), build_dtype(hint))
        for name, hint in stored.input_types.items()
    }
    template = jm.abstract_weights(component.weight_params)
    weights = {
        path: jax.ShapeDtypeStruct(w.shape, _stored_dtype(w.dtype)) for path, w in jm.flat_weights(template).items()
    }

    def per_example(nested: jm.Weights, example: dict[str, jax.Array]) -> dict[str, jax.Array]:
        outputs = process(nested, example, None)
        return {name: outputs[name] for name in stored.outputs}

    def exported_function(flat: dict[str, jax.Array], given: dict[str, jax.Array]) -> dict[str, jax.Array]:
        nested = _nested(template, flat)
        return jax.vmap(per_example, in_axes=(None, 0))(nested, given) if batch else per_example(nested, given)

    exported = jax.export.export(jax.jit(exported_function), platforms=platforms)(weights, inputs)
    annotations = {
        name: annotation_str(hint) for name, hint in (*stored.input_types.items(), *stored.output_types.items())
    }
    return ExportedProcess(
        exported, component.path, str(stored), batch, annotations, dict(component.dims), dict(component.limits)
    )


def _free_dims(ports: jm.ProcessPorts, bound: Mapping[str, int], batch: bool, where: str) -> list[str]:
    """The free dims of the inputs, in order of appearance; refuses ports that cannot be exported."""
    free: list[str] = []
    for side, types in (("input", ports.input_types), ("output", ports.output_types)):
        for name, hint in types.items():
            port = f"{where}, {side} port '{name}'"
            if not is_array_annotation(hint) or build_dtype(hint) is None:
                raise jm.ArgumentError(
                    f"{port}: it has no array annotation with a known dtype (it has {annotation_str(hint)}); "
                    f'an exported port is one array annotated like `Float[Array, "T d"]`'
                )
            for dim in dims_of(hint):
                text = annotation_str(hint)
                if dim.variadic or dim.kind == "anonymous":
                    raise jm.ArgumentError(
                        f"{port}: {text} has a dim (`*name`, `...` or `_`) without one fixed axis; an exported "
                        f"port names each axis (`batch=True` adds the leading batch axis)"
                    )
                if dim.kind == "symbolic":
                    raise jm.ArgumentError(
                        f"{port}: {text} has the dim expression `{dim.text}`, which export does not support; "
                        f"give that axis its own name"
                    )
                if dim.kind != "named" or dim.text in bound or dim.text in free:
                    continue
                if batch and dim.text == BATCH:
                    raise jm.ArgumentError(
                        f"{port}: {text} has a free dim named `{BATCH}`, the name of the leading axis that "
                        f"`batch=True` adds; rename that dim or export with `batch=False`"
                    )
                if side == "output":
                    raise jm.ArgumentError(
                        f"{port}: {text} has the free dim `{dim.text}`, which no input has, so no call could "
                        f"give its size; bind it in the component's `dims`"
                    )
                free.append(dim.text)
    return free


def _shape(hint: Any, bound: Mapping[str, int], symbols: Mapping[str, Any]) -> tuple[Any, ...]:
    """The shape an annotation (checked by `_free_dims`) gives: sizes, bound dims, and symbolic free dims."""
    return tuple(
        int(d.text) if d.kind == "fixed" else bound[d.text] if d.text in bound else symbols[d.text]
        for d in dims_of(hint)
    )


def _stored_dtype(dtype: Any) -> Any:
    """The dtype a weight is stored (and taken by the artifact) with: its own, or float32 where NumPy lacks it."""
    return np.dtype(_STORED_AS_FLOAT32) if np.dtype(dtype).kind == "V" else dtype


def _nested(template: Mapping[str, Any], flat: Mapping[str, jax.Array], prefix: str = "") -> jm.Weights:
    """The weights tree of `template` (abstract weights) filled from the flat weights, each in its own dtype."""
    return {
        key: _nested(spec, flat, f"{prefix}{key}.")
        if isinstance(spec, Mapping)
        else flat[f"{prefix}{key}"].astype(spec.dtype)
        for key, spec in template.items()
    }


def save(
    path: str | os.PathLike[str],
    exported: ExportedProcess,
    weights: Mapping[str, Any],
    metadata: Mapping[str, Any] | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write an export folder: `model.jaxexport`, `weights.npz` and `signature.json`.

    `signature.json` holds the format, the jaxmake and jax versions, the component's path
    and process, each input and output port with its annotation, its symbolic shape as a
    string that `jax.export.symbolic_shape` reads (`"batch, T"`) and its dtype, the bound
    dims, the limits, a count of the weights, and `metadata`. Weights of a dtype NumPy
    lacks (bfloat16) are written as float32, which holds them exactly; the artifact takes
    them so and casts them back.

    Args:
        path: the folder; it is created, and must not exist or be empty unless `overwrite`.
        exported: what `export` returned (jax's own `Exported` keeps neither the limits nor
            the annotations written here).
        weights: its component's weights, nested (as `jm.make_weights` gives them) or flat.
        metadata: anything JSON can hold, e.g. a vocabulary.
        overwrite: replace the three files in a folder that holds other things.

    Returns:
        The folder, as a `Path`.

    Raises:
        ArgumentError: `metadata` is not JSON.
        WeightsError: the weights are not those the artifact takes; lists every missing,
            extra and mis-shaped path.
        ArtifactError: `path` is a file, or a folder that is not empty (without `overwrite`).
    """
    try:
        metadata_json = json.loads(json.dumps(dict(metadata or {}), allow_nan=False))
    except (TypeError, ValueError) as error:
        raise jm.ArgumentError(f"`save` takes `metadata` that JSON can hold: {error}") from None
    arrays = _storable_weights(exported.exported, jm.flat_weights(weights))
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ArtifactError(f"`{folder}` is a file: an export is written to a folder")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise ArtifactError(f"`{folder}` is not empty: export to a new folder, or overwrite it (`overwrite=True`)")
    folder.mkdir(parents=True, exist_ok=True)
    signature = _signature(exported, arrays, metadata_json)
    _write(folder / ARTIFACT, lambda file: file.write(exported.serialize()))
    _write(folder / WEIGHTS, lambda file: _write_npz(file, arrays))
    _write(folder / SIGNATURE, lambda file: file.write(json.dumps(signature, indent=1).encode()))
    return folder


def _write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write a file through a temporary one beside it, so that a reader never sees half of it."""
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("wb") as file:
        write(file)
    temporary.replace(path)


def _write_npz(file: IO[bytes], arrays: Mapping[str, np.ndarray]) -> None:
    """What `np.savez` writes, without its keyword arguments (a weight may be named `allow_pickle`)."""
    with zipfile.ZipFile(file, "w") as npz:
        for name, array in arrays.items():
            with npz.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


def _weight_avals(exported: jax.export.Exported) -> dict[str, Any]:
    """The avals of the weights that an exported `(weights, inputs)` function takes."""
    args, _ = jax.tree.unflatten(exported.in_tree, exported.in_avals)
    weights: dict[str, Any] = args[0]
    return weights


def _storable_weights(exported: jax.export.Exported, flat: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The flat weights as NumPy arrays of the dtypes the artifact takes; `WeightsError` lists every mismatch."""
    expected = _weight_avals(exported)
    missing = [f"  missing: {p} {_aval_str(a)}" for p, a in expected.items() if p not in flat]
    extra = [f"  extra:   {p}" for p in flat if p not in expected]
    wrong: list[str] = []
    arrays: dict[str, np.ndarray] = {}
    for name, aval in expected.items():
        if name not in flat:
            continue
        given = flat[name]
        shape, dtype = tuple(getattr(given, "shape", ())), np.dtype(getattr(given, "dtype", object))
        if shape != tuple(aval.shape) or _stored_dtype(dtype) != aval.dtype:
            wrong.append(f"  wrong:   {name} is {jm.value_repr(shape)} {dtype}, expected {_aval_str(aval)}")
        else:
            arrays[name] = np.asarray(given).astype(aval.dtype)
    if missing or extra or wrong:
        raise jm.WeightsError("\n".join(["the weights do not fit the exported function:", *missing, *extra, *wrong]))
    return arrays


def _aval_str(aval: Any) -> str:
    return f"{tuple(aval.shape)} {aval.dtype}"


def _signature(record: ExportedProcess, arrays: Mapping[str, np.ndarray], metadata: Any) -> dict[str, Any]:
    """The contents of `signature.json`."""
    exported = record.exported
    _, inputs = jax.tree.unflatten(exported.in_tree, exported.in_avals)[0]
    outputs = jax.tree.unflatten(exported.out_tree, exported.out_avals)

    def ports(avals: Mapping[str, Any]) -> dict[str, Any]:
        return {
            name: {
                "shape": ", ".join(str(d) for d in aval.shape),
                "dtype": str(aval.dtype),
                "annotation": record.annotations[name],
            }
            for name, aval in avals.items()
        }

    return {
        "format": FORMAT,
        "jaxmake_version": jm.__version__,
        "jax_version": jax.__version__,
        "component": record.component,
        "process": record.process,
        "call": "exported.call(weights, inputs) -> outputs; weights and ports are dicts keyed by name",
        "batch": record.batch,
        "platforms": list(exported.platforms),
        "inputs": ports(inputs),
        "outputs": ports(outputs),
        "dims": dict(record.dims),
        "limits": dict(record.limits),
        "weights": {
            "arrays": len(arrays),
            "parameters": sum(math.prod(a.shape) for a in arrays.values()),
            "bytes": sum(a.nbytes for a in arrays.values()),
        },
        "metadata": metadata,
    }


def load(path: str | os.PathLike[str]) -> tuple[jax.export.Exported, dict[str, np.ndarray], dict[str, Any]]:
    """Read an export folder that `save` wrote.

    Plain JAX needs no more than `jax.export.deserialize` and `np.load`; this also checks
    the folder and that the weights fit the artifact, and gives the artifact its limits
    back (jax does not serialize them), so that a size beyond one is refused at once with
    `ValueError: Input shapes do not match the symbolic shape constraint T <= 8 ...`.

    Args:
        path: the folder.

    Returns:
        `(exported, weights, signature)`: the deserialized `Exported`, the flat weights
        as NumPy arrays, and `signature.json` as a dict.

    Raises:
        ArtifactError: the folder or one of its files is missing or damaged.
        WeightsError: the weights do not fit the artifact; lists every mismatch.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise ArtifactError(
            f"`{folder}` is not a folder: expected an export folder with {ARTIFACT}, {WEIGHTS} and {SIGNATURE}"
        )
    for name in (ARTIFACT, WEIGHTS, SIGNATURE):
        if not (folder / name).is_file():
            raise ArtifactError(f"`{folder}` holds no {name}: is it a folder written by `jaxmake export`?")
    try:
        signature = json.loads((folder / SIGNATURE).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise ArtifactError(f"`{folder / SIGNATURE}` is damaged: not JSON ({error})") from None
    if not isinstance(signature, dict) or signature.get("format") != FORMAT:
        seen = jm.value_repr(signature.get("format") if isinstance(signature, dict) else signature)
        raise ArtifactError(f"`{folder / SIGNATURE}` has the format {seen}, expected {FORMAT!r}")
    try:
        exported = jax.export.deserialize(bytearray((folder / ARTIFACT).read_bytes()))
    except Exception as error:  # jax raises what flatbuffers or its own checks raise
        raise ArtifactError(f"`{folder / ARTIFACT}` is damaged: jax cannot deserialize it ({error})") from None
    try:
        with np.load(folder / WEIGHTS, allow_pickle=False) as npz:
            weights = {name: npz[name] for name in npz.files}
    except (OSError, ValueError) as error:
        raise ArtifactError(f"`{folder / WEIGHTS}` is damaged: NumPy cannot read it ({error})") from None
    _storable_weights(exported, weights)
    limits = signature.get("limits")
    if not isinstance(limits, dict) or not all(isinstance(v, int) for v in limits.values()):
        raise ArtifactError(f"`{folder / SIGNATURE}` is damaged: its 'limits' is not a table of sizes")
    return _with_limits(exported, limits), weights, signature


def _with_limits(exported: jax.export.Exported, limits: Mapping[str, int]) -> jax.export.Exported:
    """`exported` whose symbolic dims carry the constraints `dim <= limit` again (jax does not serialize them).

    Without them a deserialized artifact still refuses a size beyond a limit, but only
    when it compiles, after shape refinement: a body that cannot be refined at that size
    (a slice of a position table) reports its own failure instead of the limit.
    """
    avals = (*exported.in_avals, *exported.out_avals)
    names = sorted({str(v) for a in avals for d in a.shape if not isinstance(d, int) for v in d.get_vars()})
    scope = jax.export.SymbolicScope([f"{name} <= {limits[name]}" for name in names if name in limits])

    def rescoped(aval: Any) -> Any:
        if all(isinstance(d, int) for d in aval.shape):
            return aval
        return aval.update(shape=jax.export.symbolic_shape(", ".join(map(str, aval.shape)), scope=scope))

    return dataclasses.replace(
        exported,
        in_avals=tuple(map(rescoped, exported.in_avals)),
        out_avals=tuple(map(rescoped, exported.out_avals)),
    )
