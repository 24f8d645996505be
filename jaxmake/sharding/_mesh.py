"""Device meshes from a short text (`"data=4,model=2"`), over every device of every process.

`parse_mesh` reads the text a user types; `make_mesh` lays the devices JAX sees (all of
them, on every host of a `jax.distributed` run) out on a `jax.sharding.Mesh` of that
shape, with `Auto` axes so that `jit` places what the shardings leave open.
"""

import math
from collections.abc import Mapping

import jax
from jax.sharding import AxisType, Mesh

import jaxmake as jm


def parse_mesh(text: str) -> dict[str, int]:
    """The axes of a mesh written as `NAME=SIZE,NAME=SIZE,...`, in order.

    Args:
        text: e.g. `"data=4,model=2"`; each name a Python identifier, used once, each
            size an integer >= 1; spaces around the parts are ignored.

    Returns:
        `{name: size}`, in the order written.

    Raises:
        ShardingError: the text is not of that form; says which part is wrong and why.

    Example:
        >>> parse_mesh("data=4,model=2")
        {'data': 4, 'model': 2}
        >>> parse_mesh("data=4,data=2")
        Traceback (most recent call last):
        ...
        jaxmake._partition.ShardingError: mesh 'data=4,data=2': the axis 'data' is named twice
    """
    shape: dict[str, int] = {}
    for part in text.split(","):
        name, equals, size = (piece.strip() for piece in part.partition("="))
        if not equals or not name.isidentifier():
            raise _mesh_error(text, f"{part.strip()!r} is not NAME=SIZE (e.g. data=4)")
        if name in shape:
            raise _mesh_error(text, f"the axis {name!r} is named twice")
        if not size.isdecimal() or len(size) > 9 or int(size) < 1:  # 9 digits: more devices than any mesh has
            raise _mesh_error(
                text, f"the size of axis {name!r} must be an integer in [1, 999999999], got {jm.value_repr(size)}"
            )
        shape[name] = int(size)
    return shape


def make_mesh(shape: Mapping[str, int]) -> Mesh:
    """A mesh of the given axis sizes over all the devices JAX sees, on every process.

    The device count must equal the product of the sizes; `jax.make_mesh` picks their
    order. On CPU that is process by process: `data=4` over 2 processes of 2 devices
    puts process 0's devices at `data` 0 and 1.

    Args:
        shape: axis name -> size, e.g. `parse_mesh("data=4,model=2")`.

    Returns:
        A `jax.sharding.Mesh` whose axes are all `AxisType.Auto`.

    Raises:
        ShardingError: no axis is given, or the product of the sizes is not the number of
            devices; on CPU the message says how to get more devices.

    Example:
        >>> dict(make_mesh({"data": 2, "model": 2}).shape)  # the tests see 4 CPU devices
        {'data': 2, 'model': 2}
        >>> make_mesh({"data": 8})
        Traceback (most recent call last):
        ...
        jaxmake._partition.ShardingError: the mesh data=8 needs 8 devices, JAX sees 4 (cpu, 1 process); on CPU, ...
    """
    if not shape:
        raise jm.ShardingError("a mesh needs at least one axis, e.g. data=4")
    needed, seen = math.prod(shape.values()), jax.device_count()
    if needed != seen:
        processes = jax.process_count()
        where = f"{jax.default_backend()}, {processes} process{'es' if processes > 1 else ''}"
        per_process = needed // processes if needed % processes == 0 else needed
        hint = (
            f"; on CPU, set XLA_FLAGS=--xla_force_host_platform_device_count={per_process} before JAX starts "
            f"(`jaxmake train ... --cpu-devices {per_process}` does it for you)"
            if jax.default_backend() == "cpu"
            else ""
        )
        raise jm.ShardingError(f"the mesh {_format(shape)} needs {needed} devices, JAX sees {seen} ({where}){hint}")
    return jax.make_mesh(tuple(shape.values()), tuple(shape), axis_types=(AxisType.Auto,) * len(shape))


def _format(shape: Mapping[str, int]) -> str:
    return ",".join(f"{name}={size}" for name, size in shape.items())


def _mesh_error(text: str, reason: str) -> jm.ShardingError:
    return jm.ShardingError(f"mesh {jm.value_repr(text)}: {reason}")
