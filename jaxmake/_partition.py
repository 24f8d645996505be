"""Logical axis names -> mesh axes: how a weight spec is laid out on a device mesh.

A `WeightParams` may name each of its dims (`axes=("embed", "mlp")`); `rules` map those
logical names to axes of a `jax.sharding.Mesh` (`{"mlp": "model"}`); names without a rule,
and dims without a name, are replicated. JAX does the rest.
"""

import math
from collections.abc import Mapping
from typing import Any, TypeAlias

from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxmake._errors import JaxMakeError
from jaxmake._weights import WeightParams, WeightParamsTree, map_params, param_leaves

Rules: TypeAlias = Mapping[str, str | tuple[str, ...] | None]
"""Logical axis name -> the mesh axis (or axes, or `None`) its dims are split over."""


class ShardingError(JaxMakeError, ValueError):
    """A weight cannot be laid out as asked: names the weight, the dimension and the mesh axis."""


def partition_spec(spec: WeightParams, rules: Rules) -> PartitionSpec:
    """The `PartitionSpec` of one weight under `rules` (replicated where nothing applies).

    Example:
        >>> partition_spec(WeightParams((8, 16), axes=("embed", "mlp")), {"mlp": "model"})
        P(None, 'model')
    """
    if spec.axes is None:
        return PartitionSpec()
    return PartitionSpec(*(None if name is None else rules.get(name) for name in spec.axes))


def weight_shardings(weight_params: WeightParamsTree, mesh: Mesh, rules: Rules) -> dict[str, Any]:
    """The `NamedSharding` of every weight of a spec tree, as a tree of the same keys.

    Raises:
        ShardingError: a rule names an axis the mesh does not have, or splits a dimension
            whose size is not divisible by the size of its mesh axes.
    """
    unknown = sorted({a for axes in rules.values() for a in _axes(axes)} - set(mesh.axis_names))
    if unknown:
        raise ShardingError(f"the rules use mesh axes {unknown}, but the mesh has only {list(mesh.axis_names)}")
    for path, spec in param_leaves(weight_params):
        for dim, (size, axes) in enumerate(zip(spec.shape, partition_spec(spec, rules))):
            parts = math.prod(mesh.shape[a] for a in _axes(axes))
            if size % parts:
                raise ShardingError(
                    f"weight `{path}` dimension {dim} (size {size}, logical axis {spec.axes[dim]!r}) "  # type: ignore[index]
                    f"cannot be split over mesh axis {axes!r} of size {parts}"
                )
    return map_params(weight_params, lambda spec: NamedSharding(mesh, partition_spec(spec, rules)))


def _axes(axes: str | tuple[str, ...] | None) -> tuple[str, ...]:
    return () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
