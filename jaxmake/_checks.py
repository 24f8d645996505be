"""Shape contracts: checking process ports against their jaxtyping annotations.

One mechanism serves both uses:

* `checked_process` wraps a process so that each call checks its input and output ports
  with jaxtyping + beartype, in one dimension memo per call. Under `jax.jit` the check
  runs while tracing only, so a compiled step pays nothing for it.
* `check_contract` is that same wrapper evaluated with `jax.eval_shape` on abstract
  inputs built from the input annotations (no FLOPs, no data), for two different sizes
  of every free dimension. `Component` runs it at make time.
* `stand_in` lets a verified process trust its contract while an enclosing component's
  contract is checked: it checks the inputs it is given against its annotations and
  returns zeros of the shapes and dtypes its output annotations promise, instead of
  tracing its own body again. So a model's make-time checks trace each component once
  per size, however deeply it is nested, not once per enclosing level.

Set the environment variable `JAXMAKE_CHECK_CONTRACTS=0` to skip make-time checks.
"""

import functools
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from beartype.door import die_if_unbearable, is_bearable
from beartype.roar import BeartypeDoorHintViolation
from jaxtyping import Shaped, jaxtyped
from jaxtyping._storage import get_shape_memo  # the dims bound so far, which messages report

from jaxmake._annotations import (
    annotation_str,
    build_dtype,
    can_build,
    dim_names,
    dims_of,
    has_variadic,
    is_array_annotation,
    shape_of,
    variadic_names,
)
from jaxmake._errors import JaxMakeError, ShapeError, WeightsError, array_str, value_repr
from jaxmake._ports import ProcessPorts, State
from jaxmake._weights import WeightParamsTree, Weights, abstract_weights, check_weights

ProcessFn = Callable[[Weights, Mapping[str, Any], Any], Mapping[str, Any]]

CHECKS_ENV_VAR = "JAXMAKE_CHECK_CONTRACTS"
_RECORDS: ContextVar[list[str] | None] = ContextVar("jaxmake_contract_records", default=None)
_CHECKING: ContextVar[str | None] = ContextVar("jaxmake_checking", default=None)  # the path being checked


def contracts_enabled() -> bool:
    """False when `JAXMAKE_CHECK_CONTRACTS` is `0`, `false`, `no` or `off`."""
    return os.environ.get(CHECKS_ENV_VAR, "1").strip().lower() not in ("0", "false", "no", "off")


@contextmanager
def recorded_contracts() -> Iterator[list[str]]:
    """Record the make-time contract checks run inside the block, as `"path: ports"` lines.

    Example:
        >>> from jaxmake.components import Mlp
        >>> with recorded_contracts() as checked:
        ...     _ = Mlp.make(Mlp(2, (3,), 2))
        >>> checked
        ['Mlp.layer_0: (Input) -> (Output)', 'Mlp.layer_1: (Input) -> (Output)',
         'Mlp.dropout: (Input) -> (Output)', 'Mlp: (Input) -> (Output)']
    """
    records: list[str] = []
    token = _RECORDS.set(records)
    try:
        yield records
    finally:
        _RECORDS.reset(token)


_F = TypeVar("_F", bound=Callable[..., Any])


def _in_callers_memo(fn: _F) -> _F:
    """Mark `fn` to run in its caller's jaxtyping dimension memo.

    The checks of one call share one memo (the dims bound by earlier ports and by `dims`); a
    runtime checker that wraps each function in a fresh memo (jaxtyping's import hook) would
    hide them. It leaves a function with `__no_type_check__` unwrapped.
    """
    fn.__no_type_check__ = True  # type: ignore[attr-defined]
    return fn


class _Site:
    """Where a check runs (component path and ports) and what it has learnt so far."""

    def __init__(
        self,
        path: str,
        ports: ProcessPorts,
        dims: Mapping[str, int],
        limits: Mapping[str, int],
        caller: str | None = None,
        origins: Mapping[str, str] | None = None,
        state_params: WeightParamsTree | None = None,
    ) -> None:
        self.path, self.ports, self.dims, self.limits, self.caller = path, ports, dims, limits, caller
        self.state_params = state_params or {}
        self.origins = {dim: (origins or {}).get(dim, "component dims") for dim in dims}

    @_in_callers_memo
    def check_ports(self, side: str, hints: Mapping[str, Any], given: object) -> None:
        """Check that `given` maps exactly the names of `hints` to values that match them."""
        self.check_names(side, frozenset(hints), given)
        for name, hint in hints.items():
            self.check(side, name, hint, given[name])  # type: ignore[index]

    @_in_callers_memo
    def check(self, side: str, name: str, hint: Any, value: Any) -> None:
        if name == State:
            self.check_state(side, value)
            return
        if hint is None:
            return
        if is_bearable(value, hint):
            memo, variadic = get_shape_memo()[:2]
            for dim in (*memo, *variadic):
                self.origins.setdefault(dim, f"{side} '{name}'")
            over = [
                f"dimension {d} is {memo[d]}, above its limit of {self.limits[d]}"
                for d in self.limits
                if memo.get(d, 0) > self.limits[d]
            ]
            if not over:
                return
            raise ShapeError(self._message(side, name, hint, value, "; ".join(over)))
        if is_array_annotation(hint):
            reason = hint.__instancecheck_str__(value)
        else:
            try:
                die_if_unbearable(value, hint)
                reason = "it does not match the annotation"
            except BeartypeDoorHintViolation as violation:
                reason = str(violation)
        raise ShapeError(self._message(side, name, hint, value, reason))

    def check_state(self, side: str, value: Any) -> None:
        """Check a `State` port against the component's `state_params` (keys, shapes, dtypes)."""
        try:
            check_weights(self.state_params, value if isinstance(value, Mapping) else {})
            if not isinstance(value, Mapping):
                raise WeightsError(f"the state is a dict of arrays, got {array_str(value)}")
        except WeightsError as error:
            detail = str(error).replace("the weights do not match their spec", "it does not match `state_params`")
            raise ShapeError(f"{self._where()}, {side} port '{State}'\n  {detail}") from None

    @_in_callers_memo
    def check_names(self, side: str, expected: frozenset[str], given: object) -> None:
        if not isinstance(given, Mapping):
            raise ShapeError(f"{self._where()}\n  {side}s must be a dict of port name -> array, got {array_str(given)}")
        if set(given) != expected:
            missing, extra = sorted(expected - set(given)), sorted(set(given) - expected)
            parts = [f"missing {missing}" if missing else "", f"unexpected {extra}" if extra else ""]
            raise ShapeError(
                f"{self._where()}\n  {side} ports do not match: {', '.join(p for p in parts if p)}"
                f"\n  expected: {sorted(expected)}\n  got:      {sorted(given)}"
            )

    def _where(self) -> str:
        called = (
            f" (called by `{self.caller or '(top level)'}` while its contract was checked)"
            if self.caller is not None
            else ""
        )
        return f"ShapeError in {self.path or 'a component'}, process {self.ports}{called}"

    @_in_callers_memo
    def _message(self, side: str, name: str, hint: Any, value: Any, reason: str) -> str:
        memo, variadic = get_shape_memo()[:2]
        bound = [f"{dim}={value_repr(size)} ({self.origins.get(dim, 'earlier port')})" for dim, size in memo.items()]
        bound += [f"*{dim}={shape} ({self.origins.get(dim, 'earlier port')})" for dim, (_, shape) in variadic.items()]
        unbound = [d for d in dims_of(hint) if d.kind == "named" and d.text not in memo and d.text not in variadic]
        bound += [f"{'*' if d.variadic else ''}{d.text} unbound" for d in unbound]
        lines = [
            f"{self._where()}, {side} port '{name}'",
            f"  expected: {annotation_str(hint)}",
            f"  got:      {array_str(value)}",
            f"  reason:   {reason.rstrip('.')}",
            f"  bound:    {', '.join(bound) or 'nothing yet'}",
        ]
        if _one_axis_too_many(hint, value):
            lines.append(
                "  hint:     one leading axis too many; processes work per example, wrap the call in `jax.vmap`"
            )
        return "\n".join(lines)


def checked_process(
    process: ProcessFn,
    ports: ProcessPorts,
    *,
    path: str,
    dims: Mapping[str, int],
    limits: Mapping[str, int] | None = None,
    origins: Mapping[str, str] | None = None,
    state_params: WeightParamsTree | None = None,
) -> ProcessFn:
    """Wrap `process` so that every call checks its ports against their annotations.

    Dims in `dims` are bound before the first port is checked (messages say where each
    came from, as `origins` gives it: `Linear.n_in`); a free dim named in `limits` may not
    exceed its limit; a `State` port must match `state_params`. Under `jax.jit` the checks
    run at trace time only.

    Raises:
        ShapeError: a port is missing, unexpected, or does not match its annotation.
    """

    @functools.wraps(process)
    def checked(weights: Weights, inputs: Mapping[str, Any], rng: Any) -> Mapping[str, Any]:
        site = _Site(path, ports, dims, limits or {}, origins=origins, state_params=state_params)
        with _bound_dims(dims):
            site.check_ports("input", ports.input_types, inputs)
            outputs = process(weights, inputs, rng)
            site.check_ports("output", ports.output_types, outputs)
        return outputs

    return checked


@contextmanager
def _bound_dims(dims: Mapping[str, int]) -> Iterator[None]:
    with jaxtyped("context"):
        if dims:
            # Binding a name in jaxtyping's memo = checking an array of that size against it.
            dummy = np.broadcast_to(np.zeros((), np.bool_), tuple(dims.values()))
            names: Any = Shaped[np.ndarray, " ".join(dims)]
            if not is_bearable(dummy, names):
                raise ShapeError(f"cannot bind the dims {dict(dims)}: names must be distinct identifiers")
        yield


@dataclass(frozen=True)
class Contract:
    """A process's contract as verified at make time, enough to stand in for the process.

    Args:
        ports: the annotated ports.
        path: the component's path.
        dims: the sizes its config binds.
        limits: the limits of its free dims.
        weights: its weights as `jax.ShapeDtypeStruct`s.
        output_dtypes: the output dtypes seen for the input dtypes it was checked with.
        origins: where each bound dim came from.
        state_params: the spec of its `State` port (`{}` without one).
    """

    ports: ProcessPorts
    path: str
    dims: Mapping[str, int]
    limits: Mapping[str, int]
    weights: Any
    output_dtypes: Mapping[tuple[str, ...], Mapping[str, Any]]
    origins: Mapping[str, str]
    state_params: WeightParamsTree

    def outputs(self, weights: Weights, inputs: Mapping[str, Any]) -> dict[str, jax.Array] | None:
        """Zeros shaped as the output annotations promise for these inputs.

        The inputs are checked against the input annotations first (a mismatch is the
        caller's `ShapeError`). `None` where the contract cannot tell: weights that are not
        the spec's, input dtypes it was not checked with, an output dim that no input binds.
        """
        if not _same_avals(weights, self.weights):
            return None
        site = _Site(
            self.path,
            self.ports,
            self.dims,
            self.limits,
            caller=_CHECKING.get(),
            origins=self.origins,
            state_params=self.state_params,
        )
        with _bound_dims(self.dims):
            site.check_ports("input", self.ports.input_types, inputs)
            memo, variadic = get_shape_memo()[:2]
            batch = {name: shape for name, (_, shape) in variadic.items()}
            arrays = {name: hint for name, hint in self.ports.output_types.items() if name != State}
            shapes = [(name, shape_of(hint, memo, batch)) for name, hint in arrays.items()]
        dtypes = self.output_dtypes.get(_dtypes_of(self.ports, inputs))
        if dtypes is None:
            return None
        outputs: dict[str, Any] = {name: jnp.zeros(shape, dtypes[name]) for name, shape in shapes if shape is not None}
        if len(outputs) != len(shapes):
            return None
        if State in self.ports.outputs:
            outputs[State] = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), abstract_weights(self.state_params))
        return outputs


def stand_in(process: ProcessFn, contract: Contract) -> ProcessFn:
    """`process`, which returns `contract.outputs(...)` instead while another contract is checked.

    Outside make-time checks it is `process` plus one context-variable lookup per trace.
    """

    @functools.wraps(process)
    def process_or_contract(weights: Weights, inputs: Mapping[str, Any], rng: Any) -> Mapping[str, Any]:
        if _CHECKING.get() is not None:
            outputs = contract.outputs(weights, inputs)
            if outputs is not None:
                return outputs
        return process(weights, inputs, rng)

    return process_or_contract


def check_contract(
    process: ProcessFn,
    ports: ProcessPorts,
    weight_params: WeightParamsTree,
    *,
    path: str,
    dims: Mapping[str, int],
    uses_rng: bool,
    limits: Mapping[str, int] | None = None,
    origins: Mapping[str, str] | None = None,
    state_params: WeightParamsTree | None = None,
    axis_names: tuple[str, ...] = (),
) -> Contract | None:
    """Check a process's declared contract on abstract values, for two sizes of each free dim.

    Processes of other components that it calls stand in by their own contracts (see
    `stand_in`), so only this process's own body is traced. A `State` port takes the
    arrays of `state_params`. Each of `axis_names` is bound as a named axis of size 1 (as
    `jax.vmap(..., axis_name=)` binds it), so that a process that averages over the
    examples of a batch (`jax.lax.pmean(x, "batch")`) can be checked on one example.

    Returns:
        The verified contract, or `None` where it could not be checked: only processes
        whose every input port has a jaxtyping array annotation can be evaluated
        abstractly (and none is when `JAXMAKE_CHECK_CONTRACTS=0`).

    Raises:
        ShapeError: an output does not follow from the inputs and the weights, or the
            process fails on inputs that match its annotations.
    """
    hints = {name: hint for name, hint in ports.input_types.items() if name != State}
    if not contracts_enabled() or not hints or not all(map(can_build, hints.values())):
        return None
    limits = limits or {}
    origins = origins or {}
    state_params = state_params or {}
    wrapped = checked_process(
        process, ports, path=path, dims=dims, limits=limits, origins=origins, state_params=state_params
    )
    for axis_name in axis_names:  # bound as a size-1 `vmap` axis over which nothing is mapped
        wrapped = jax.vmap(wrapped, in_axes=None, out_axes=None, axis_size=1, axis_name=axis_name)
    weights = abstract_weights(weight_params)
    rng = jax.ShapeDtypeStruct((), _key_dtype()) if uses_rng else None
    output_dtypes: dict[tuple[str, ...], Mapping[str, Any]] = {}
    for attempt in range(2):
        inputs = abstract_inputs(ports, dims, attempt, limits, abstract_weights(state_params))
        token = _CHECKING.set(path)
        try:
            outputs = jax.eval_shape(wrapped, weights, inputs, rng)
        except JaxMakeError:
            raise
        except Exception as error:
            shapes = ", ".join(f"{name}={array_str(x)}" for name, x in inputs.items() if name != State)
            raise ShapeError(
                f"ShapeError in {path or 'a component'}, process {ports}\n"
                f"  the process failed on abstract inputs that match its annotations: {shapes}\n"
                f"  bound:    {', '.join(f'{d}={value_repr(s)}' for d, s in dims.items()) or 'nothing'}\n"
                f"  error:    {type(error).__name__}: {error}{_axis_hint(error, axis_names)}"
            ) from error
        finally:
            _CHECKING.reset(token)
        output_dtypes[_dtypes_of(ports, inputs)] = {name: getattr(x, "dtype", None) for name, x in outputs.items()}
    records = _RECORDS.get()
    if records is not None:
        records.append(f"{path or '(top level)'}: {ports}")
    return Contract(ports, path, dims, limits, weights, output_dtypes, origins, state_params)


def _axis_hint(error: Exception, axis_names: tuple[str, ...]) -> str:
    """A hint for a process that reduces over a named axis its component does not declare."""
    if not isinstance(error, NameError) or "axis name" not in str(error):
        return ""
    return (
        f"\n  hint:     a process (or a child's) averages over a named axis (such as `BatchNorm(axis_name=...)`); "
        f"declare it with `axis_names=` (a parent: `axis_names=c.axis_names`); declared: {list(axis_names)}"
    )


def _dtypes_of(ports: ProcessPorts, inputs: Mapping[str, Any]) -> tuple[str, ...]:
    """The dtype names of the inputs, in port order (`""` for a value without one)."""
    return tuple(str(getattr(inputs.get(name), "dtype", "")) for name in ports.input_types)


def _same_avals(tree: Any, abstract: Any) -> bool:
    """Whether `tree` has the structure, shapes and dtypes of the `ShapeDtypeStruct` tree `abstract`."""
    leaves, structure = jax.tree.flatten(tree)
    expected, expected_structure = jax.tree.flatten(abstract)
    same_structure: bool = structure == expected_structure  # type: ignore[operator]  # PyTreeDef's stub lacks __eq__
    return same_structure and all(
        getattr(x, "shape", None) == a.shape and getattr(x, "dtype", None) == a.dtype for x, a in zip(leaves, expected)
    )


def abstract_inputs(
    ports: ProcessPorts,
    dims: Mapping[str, int],
    attempt: int,
    limits: Mapping[str, int] | None = None,
    state: Any = None,
) -> dict[str, Any]:
    """`ShapeDtypeStruct` inputs matching the input annotations (and `state` for a `State` port).

    Bound dims take their size from `dims`. Free dims take distinct sizes of at least 2
    that differ from every bound size (so that a swapped dimension cannot pass by
    accident); attempt 0 and attempt 1 give every free dim a different size, and give a
    variadic dim (`*batch`) zero and two axes. A free dim with a limit takes its limit in
    attempt 0 and a smaller size in attempt 1, where there is one.
    """
    limits = limits or {}
    hints = [h for h in ports.input_types.values() if is_array_annotation(h)]
    free = list(dict.fromkeys(n for h in hints for n in dim_names(h, variadic=False) if n not in dims))
    variadic = list(dict.fromkeys(n for h in hints for n in variadic_names(h)))
    taken = set(dims.values())
    sizes = dict(dims)
    for name in (n for n in free if n in limits):
        # The sizes below the limit, largest first, skipping taken ones: lazily, since a limit may be huge.
        pool = (s for s in range(limits[name], 0, -1) if s not in taken)
        largest = next(pool, limits[name])
        sizes[name] = next(pool, largest) if attempt else largest
        taken.add(sizes[name])
    unlimited = [n for n in free if n not in limits]
    candidates = (n for n in range(2, 1 << 16) if n not in taken)
    firsts = [next(candidates) for _ in range(len(unlimited) + 2 * len(variadic))]
    seconds = [next(candidates) for _ in firsts]
    sizes_now = seconds if attempt else firsts
    sizes.update(zip(unlimited, sizes_now))
    rest = iter(sizes_now[len(unlimited) :])
    batch = {n: (next(rest), next(rest)) if attempt else () for n in variadic}
    inputs: dict[str, Any] = {}
    for name, hint in ports.input_types.items():
        if name == State:
            inputs[name] = {} if state is None else state
            continue
        shape = shape_of(hint, sizes, batch, anonymous=3)
        assert shape is not None, "every named dim of an input annotation has a size"
        inputs[name] = jax.ShapeDtypeStruct(shape, build_dtype(hint))
    return inputs


def _one_axis_too_many(hint: Any, value: Any) -> bool:
    if not is_array_annotation(hint) or not hasattr(value, "shape"):
        return False
    return not has_variadic(hint) and len(value.shape) == len(hint.dim_str.split()) + 1


@functools.cache
def _key_dtype() -> Any:
    return jr.key(0).dtype
