"""`jaxmake summary`: a table of every weight of a model."""

import math
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

import jaxmake as jm


def weight_rows(weight_params: jm.WeightParamsTree) -> Iterator[tuple[str, jm.WeightParams]]:
    """`(dotted path, spec)` for every array of a spec tree, in key order (`WeightParams` are pytree leaves)."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(weight_params)
    for path, spec in leaves:
        yield ".".join(str(key.key) for key in path), spec


def summary_table(title: str, weight_params: jm.WeightParamsTree, rules: jm.Rules | None = None) -> str:
    """The table: path, shape, dtype, parameter count and bytes of each weight, and totals.

    With `rules`, a last column gives each weight's partition spec under them.
    """
    rows: list[tuple[str, ...]] = [
        ("path", "shape", "dtype", "params", "bytes", *(("partition",) if rules is not None else ()))
    ]
    total_params = total_bytes = 0
    for path, spec in weight_rows(weight_params):
        count = math.prod(spec.shape)
        size = count * np.dtype(spec.dtype).itemsize
        total_params, total_bytes = total_params + count, total_bytes + size
        partition = () if rules is None else (_spec_str(jm.partition_spec(spec, rules)),)
        rows.append((path, str(spec.shape), str(np.dtype(spec.dtype)), f"{count:,}", f"{size:,}", *partition))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    aligned = [
        "  ".join(
            cell.rjust(w) if i in (3, 4) else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))
        ).rstrip()
        for row in rows
    ]
    n_arrays = len(rows) - 1
    footer = (
        f"total: {total_params:,} parameters in {n_arrays} arrays, {total_bytes:,} bytes ({human_bytes(total_bytes)})"
    )
    return "\n".join([title, aligned[0], "-" * len(aligned[0]), *aligned[1:], footer])


def _spec_str(spec: Any) -> str:
    return "(" + ", ".join("-" if axis is None else str(axis) for axis in spec) + ")" if len(spec) else "replicated"


def human_bytes(n_bytes: float) -> str:
    """`n_bytes` in binary units, one decimal: `1.5 MiB`, `32.0 B`."""
    power = min(int(math.log(max(n_bytes, 1), 1024)), 4)
    return f"{n_bytes / 1024**power:.1f} {('B', 'KiB', 'MiB', 'GiB', 'TiB')[power]}"
