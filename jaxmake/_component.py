"""Components: weight specs plus named pure processes, with contracts checked at make time.

A `Component` is what a config's `make` returns. It holds the spec of its weights
(`weight_params`) and its processes, each a pure function
`(weights, inputs, rng) -> outputs` keyed by its `ProcessPorts`. Constructing one checks
every annotated process by abstract evaluation: this is "make time". A checked process
is stored so that, while an enclosing component is checked, it stands in by its verified
contract instead of being traced again (see `jaxmake._checks.stand_in`).
"""

import inspect
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeAlias

import jax.random as jr
from jax import Array

from jaxmake._checks import check_contract, checked_process, stand_in
from jaxmake._errors import JaxMakeError
from jaxmake._ports import Input, Output, ProcessPorts, make_ports, pipeline_ports
from jaxmake._weights import WeightParamsTree, Weights

Process: TypeAlias = Callable[[Weights, Mapping[str, Array], Array | None], Mapping[str, Array]]
"""`(weights, inputs, rng) -> outputs`: inputs and outputs map port names to arrays."""
FixedProcess: TypeAlias = Callable[[Weights, Mapping[str, Array]], Mapping[str, Array]]
"""A process that uses no randomness: `(weights, inputs) -> outputs`."""
Pipeline: TypeAlias = Callable[[Weights, Array, Array | None], Array]
"""`(weights, x, rng) -> y`: the process `(Input) -> (Output)` on bare arrays."""
FixedPipeline: TypeAlias = Callable[[Weights, Array], Array]
"""A pipeline that uses no randomness: `(weights, x) -> y`."""

_SCOPE: ContextVar[tuple[str, ...]] = ContextVar("jaxmake_scope", default=())


@contextmanager
def scope(name: str) -> Iterator[None]:
    """Name the components made inside the block, for error messages.

    A component records the path of the scopes it was made in (`vit.encoder.mha`);
    every `ShapeError` it raises names that path. Use the sub-component's weight key:

    >>> with scope("encoder"), scope("mha"):
    ...     current_path()
    'encoder.mha'
    """
    token = _SCOPE.set((*_SCOPE.get(), name))
    try:
        yield
    finally:
        _SCOPE.reset(token)


def current_path() -> str:
    """The dotted path of the enclosing `scope` blocks (`""` at top level)."""
    return ".".join(_SCOPE.get())


@dataclass(frozen=True, eq=False)
class Component:
    """An uninitialised network module: weight specs and named pure processes.

    Args:
        weight_params: the nested spec of the weights its processes take.
        processes: each process keyed by its ports.
        fixed: the ports of the processes that use no randomness (their rng is `None`).
        dims: sizes of named dimensions bound by the config, e.g. `{"dim_model": 12}`.
        limits: the largest size each named free dimension may take, e.g. `{"T": n_ctx}`;
            make-time checks stay within them and checked calls enforce them.
        path: where it sits in the model; defaults to the enclosing `scope` blocks.

    Raises:
        ShapeError: an annotated process does not meet its contract (at construction,
            unless `JAXMAKE_CHECK_CONTRACTS=0`).
        JaxMakeError: the fields are malformed.
    """

    weight_params: WeightParamsTree
    processes: Mapping[ProcessPorts, Process]
    fixed: frozenset[ProcessPorts] = frozenset()
    dims: Mapping[str, int] = field(default_factory=dict)
    limits: Mapping[str, int] = field(default_factory=dict)
    path: str = field(default_factory=current_path)

    def __post_init__(self) -> None:
        for ports, process in self.processes.items():
            if not isinstance(ports, ProcessPorts) or not callable(process):
                raise JaxMakeError(
                    f"{self._name()}: processes map `ProcessPorts` to functions, got {ports!r}: {process!r}"
                )
        if not self.fixed <= set(self.processes):
            raise JaxMakeError(
                f"{self._name()}: `fixed` names ports without a process: {sorted(map(str, self.fixed - set(self.processes)))}"
            )
        for field_name, sizes, least in (("dims", self.dims, 0), ("limits", self.limits, 1)):
            for name, size in sizes.items():
                if not isinstance(name, str) or isinstance(size, bool) or not isinstance(size, int) or size < least:
                    raise JaxMakeError(
                        f"{self._name()}: `{field_name}` maps names to sizes >= {least}, got {name!r}={size!r}"
                    )
        if set(self.dims) & set(self.limits):
            raise JaxMakeError(
                f"{self._name()}: {sorted(set(self.dims) & set(self.limits))} are both bound and limited"
            )
        object.__setattr__(self, "dims", MappingProxyType(dict(self.dims)))
        object.__setattr__(self, "limits", MappingProxyType(dict(self.limits)))
        processes = dict(self.processes)
        for ports, process in processes.items():
            contract = check_contract(
                process,
                ports,
                self.weight_params,
                path=self.path,
                dims=self.dims,
                uses_rng=ports not in self.fixed,
                limits=self.limits,
            )
            if contract is not None:  # enclosing components' checks then trust it
                processes[ports] = stand_in(process, contract)
        object.__setattr__(self, "processes", MappingProxyType(processes))

    @classmethod
    def from_process(
        cls,
        weight_params: WeightParamsTree,
        process: Process,
        ports: ProcessPorts,
        dims: Mapping[str, int] | None = None,
        *,
        fixed: bool = False,
        limits: Mapping[str, int] | None = None,
    ) -> "Component":
        """A component with one process; `fixed=True` declares that it ignores its rng."""
        return cls(
            weight_params, {ports: process}, frozenset({ports}) if fixed else frozenset(), dims or {}, limits or {}
        )

    @classmethod
    def from_fixed_process(
        cls,
        weight_params: WeightParamsTree,
        fixed_process: FixedProcess,
        ports: ProcessPorts,
        dims: Mapping[str, int] | None = None,
        *,
        limits: Mapping[str, int] | None = None,
    ) -> "Component":
        """A component with one process that uses no randomness."""
        return cls.from_process(weight_params, _ignore_rng(fixed_process), ports, dims, fixed=True, limits=limits)

    @classmethod
    def from_pipeline(
        cls,
        weight_params: WeightParamsTree,
        pipeline: Pipeline,
        ports: ProcessPorts | None = None,
        dims: Mapping[str, int] | None = None,
        *,
        fixed: bool = False,
        limits: Mapping[str, int] | None = None,
    ) -> "Component":
        """A component whose one process is the pipeline `(weights, x, rng) -> y`.

        `ports` defaults to the pipeline's own jaxtyping annotations of `x` and its return.
        `fixed=True` declares that the pipeline ignores its rng (it is then called with
        `None`), which is how a component whose randomness depends on its config (dropout
        with a keep rate of 1) says so.
        """
        ports = _pipeline_ports(pipeline, ports)
        return cls.from_process(weight_params, _as_process(pipeline), ports, dims, fixed=fixed, limits=limits)

    @classmethod
    def from_fixed_pipeline(
        cls,
        weight_params: WeightParamsTree,
        fixed_pipeline: FixedPipeline,
        ports: ProcessPorts | None = None,
        dims: Mapping[str, int] | None = None,
        *,
        limits: Mapping[str, int] | None = None,
    ) -> "Component":
        """A component whose one process is the pipeline `(weights, x) -> y` (no randomness)."""
        ports = _pipeline_ports(fixed_pipeline, ports)
        process = _as_process(lambda weights, x, rng: fixed_pipeline(weights, x))
        return cls.from_process(weight_params, process, ports, dims, fixed=True, limits=limits)

    def get_process(self, ports: ProcessPorts) -> Process:
        """The process with these port names.

        Raises:
            JaxMakeError: there is none; the message lists the processes there are.
        """
        if ports not in self.processes:
            raise JaxMakeError(f"{self._name()} has no process {ports}. {self._listing()}")
        return self.processes[ports]

    def get_fixed_process(self, ports: ProcessPorts) -> FixedProcess:
        """The process with these port names, as `(weights, inputs) -> outputs`.

        Raises:
            JaxMakeError: there is none, or it uses randomness (it is not fixed).
        """
        process = self.get_process(ports)
        if ports not in self.fixed:
            raise JaxMakeError(
                f"{self._name()}'s process {ports} uses randomness, so it has no fixed form; call "
                f"`get_process(ports)` and pass an rng. {self._listing()}"
            )
        return lambda weights, inputs: process(weights, inputs, None)

    @property
    def pipeline(self) -> Pipeline:
        """The process `(Input) -> (Output)` as `(weights, x, rng) -> y`."""
        process = self.get_process(pipeline_ports)
        return lambda weights, x, rng: process(weights, {Input: x}, rng)[Output]

    @property
    def fixed_pipeline(self) -> FixedPipeline:
        """The process `(Input) -> (Output)` as `(weights, x) -> y`; only if it is fixed."""
        process = self.get_fixed_process(pipeline_ports)
        return lambda weights, x: process(weights, {Input: x})[Output]

    def checked(self, ports: ProcessPorts = pipeline_ports) -> Process:
        """The process, checking every call's ports against the annotations and bound dims.

        Under `jax.jit` the check runs while tracing only: it costs nothing per step.

        Raises:
            ShapeError: (when called) a port does not match its annotation.
        """
        return checked_process(
            self.get_process(ports), self._annotated(ports), path=self.path, dims=self.dims, limits=self.limits
        )

    def _annotated(self, ports: ProcessPorts) -> ProcessPorts:
        """The stored ports (which carry the annotations) equal to `ports`."""
        return next(p for p in self.processes if p == ports)

    def _name(self) -> str:
        return f"component `{self.path}`" if self.path else "the component"

    def _listing(self) -> str:
        listed = [f"{p} [{'fixed' if p in self.fixed else 'uses rng'}]" for p in sorted(self.processes, key=str)]
        return f"It has: {', '.join(listed) or 'no processes'}"


def _ignore_rng(fixed_process: FixedProcess) -> Process:
    return lambda weights, inputs, rng: fixed_process(weights, inputs)


def _as_process(pipeline: Pipeline) -> Process:
    return lambda weights, inputs, rng: {Output: pipeline(weights, inputs[Input], rng)}


def _pipeline_ports(fn: Callable[..., Any], ports: ProcessPorts | None) -> ProcessPorts:
    if ports is None:
        hints = typing.get_type_hints(fn) if inspect.isfunction(fn) else {}
        params = list(inspect.signature(fn).parameters)
        x_hint = hints.get(params[1]) if len(params) > 1 else None
        return make_ports({Input: x_hint}, {Output: hints.get("return")})
    if ports != pipeline_ports:
        raise JaxMakeError(f"a pipeline's ports are {pipeline_ports}, got {ports}")
    return ports


def sequential(components: Mapping[str, Component], sequence: Sequence[str]) -> Pipeline:
    """A pipeline running the named components' pipelines in order.

    Each runs on its own slice `weights[name]` with its own rng (`fold_in(rng, step)`);
    a name may appear more than once to share weights across steps. Called with
    `rng=None`, every step gets `None`: the library's components read that as evaluation
    mode (no dropout).

    Raises:
        JaxMakeError: a name is not in `components`, or one lacks a pipeline.
    """
    for name in sequence:
        if name not in components:
            raise JaxMakeError(f"`sequential` has no component `{name}`; it has {sorted(components)}")
    steps = [(name, components[name].pipeline) for name in sequence]

    def run(weights: Weights, x: Array, rng: Array | None) -> Array:
        for step, (name, pipeline) in enumerate(steps):
            x = pipeline(weights[name], x, None if rng is None else jr.fold_in(rng, step))
        return x

    return run


def merge_params(components: Mapping[str, Component]) -> dict[str, WeightParamsTree]:
    """`{name: component.weight_params}`: the spec of a parent holding these components."""
    return {name: component.weight_params for name, component in components.items()}
