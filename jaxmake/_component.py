"""Components: weight specs plus named pure processes, with contracts checked at make time.

A `Component` is what a config's `make` returns. It holds the spec of its weights
(`weight_params`) and its processes, each a pure function
`(weights, inputs, rng) -> outputs` keyed by its `ProcessPorts`. Constructing one checks
every annotated process by abstract evaluation: this is "make time". A checked process
is stored so that, while an enclosing component is checked, it stands in by its verified
contract instead of being traced again (see `jaxmake._checks.stand_in`).

One calling convention serves every component: `component(weights, x, rng=None, **side_inputs)`
runs the process whose inputs are `Input` plus the side inputs and returns its `Output`;
`component.run(weights, inputs, rng)` returns every output.

State (arrays that are not trained, such as BatchNorm's running statistics) is one more
port: a component declares its spec as `state_params` next to its `weight_params`; a
stateful process takes the state tree at its `State` input and, in training, returns the
new one at its `State` output. Nothing is hidden or mutated: `component.apply(weights, x,
state, train=True)` returns the output and the new state.
"""

import inspect
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol, TypeAlias, runtime_checkable

from jax import Array

from jaxmake._annotations import dim_names
from jaxmake._checks import check_contract, checked_process, stand_in
from jaxmake._errors import ArgumentError, checks_own_arguments, value_repr
from jaxmake._ports import Input, Output, ProcessPorts, State, make_ports, pipeline_ports
from jaxmake._weights import WeightParamsTree, Weights

Process: TypeAlias = Callable[[Weights, Mapping[str, Array], Array | None], Mapping[str, Array]]
"""`(weights, inputs, rng) -> outputs`: inputs and outputs map port names to arrays."""
FixedProcess: TypeAlias = Callable[[Weights, Mapping[str, Array]], Mapping[str, Array]]
"""A process that uses no randomness: `(weights, inputs) -> outputs`."""
Pipeline: TypeAlias = Callable[[Weights, Array, Array | None], Array]
"""`(weights, x, rng) -> y`: the process `(Input) -> (Output)` on bare arrays."""
FixedPipeline: TypeAlias = Callable[[Weights, Array], Array]
"""A pipeline that uses no randomness: `(weights, x) -> y`."""


@runtime_checkable
class StatefulPipeline(Protocol):
    """`(weights, x, state, rng, *, train) -> (y, new_state)`: a pipeline with state (see `from_stateful`)."""

    def __call__(
        self, weights: Weights, x: Array, state: Weights, rng: Array | None, /, *, train: bool
    ) -> tuple[Array, Weights]: ...


@runtime_checkable
class FixedStatefulPipeline(Protocol):
    """`(weights, x, state, *, train) -> (y, new_state)`: a stateful pipeline that uses no randomness."""

    def __call__(self, weights: Weights, x: Array, state: Weights, /, *, train: bool) -> tuple[Array, Weights]: ...


DimsSource: TypeAlias = Mapping[str, int] | object | list[Mapping[str, int] | object] | None
"""What binds a component's named dims: a mapping `{"n_tokens": 50}`; a config, whose int
fields bind the dims of the same names that its annotations use (`dims=config`); or a list of
these, merged in order."""

_SCOPE: ContextVar[tuple[str, ...]] = ContextVar("jaxmake_scope", default=())


@contextmanager
def scope(name: str) -> Iterator[None]:
    """Name the components made inside the block, for error messages.

    A component records the path of the scopes it was made in (`Vit.encoder.mha`);
    every `ShapeError` it raises names that path. `make_children` opens one per child, and
    a config's `make` called outside any scope opens one named after its class:

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


@dataclass(frozen=True, eq=False, init=False)
class Component:
    """An uninitialised network module: weight specs and named pure processes.

    Args:
        weight_params: the nested spec of the weights its processes take.
        processes: each process keyed by its ports.
        fixed: `True` if no process uses randomness, or the ports of those that do not;
            a fixed process is called with `rng=None`.
        dims: binds named dimensions to sizes (see `DimsSource`): `dims=config`,
            `dims={"n_tokens": 50}`, or `dims=[config, {"n_tokens": 50}]`.
        limits: the largest size each named free dimension may take, e.g. `{"T": n_ctx}`;
            make-time checks stay within them and checked calls enforce them.
        path: where it sits in the model; defaults to the enclosing `scope` blocks (a
            config's `make` opens one named after its class).
        state_params: the spec of its state, as `weight_params` is of its weights: arrays
            that are not trained, initialised by `make_state` (their inits must be
            constants); a process with a `State` port takes (and may return) that tree.
        axis_names: the named axes its processes average over (`jax.lax.pmean(x, "batch")`,
            bound by `jax.vmap(..., axis_name="batch")`); make-time checks bind each as an
            axis of size 1. A parent whose children declare some passes them on
            (`axis_names=c.axis_names`).

    Raises:
        ShapeError: an annotated process does not meet its contract (at construction,
            unless `JAXMAKE_CHECK_CONTRACTS=0`).
        ArgumentError: the arguments are malformed.

    Example:
        >>> from jaxtyping import Array, Float
        >>> def scale(weights: jm.Weights, x: Float[Array, "T d"]) -> Float[Array, "T d"]:
        ...     return x * weights["s"]
        >>> component = Component.from_pipeline({"s": jm.WeightParams((4,), init="ones")}, scale, dims={"d": 4})
        >>> component(jm.make_weights(jax.random.key(0), component.weight_params), jnp.ones((2, 4))).shape
        (2, 4)
    """

    weight_params: WeightParamsTree
    processes: Mapping[ProcessPorts, Process]
    fixed: frozenset[ProcessPorts]
    dims: Mapping[str, int]
    limits: Mapping[str, int]
    path: str
    state_params: WeightParamsTree
    axis_names: tuple[str, ...]
    _origins: Mapping[str, str] = field(repr=False)

    @checks_own_arguments
    def __init__(
        self,
        weight_params: WeightParamsTree,
        processes: Mapping[ProcessPorts, Process | FixedProcess],
        *,
        fixed: bool | Iterable[ProcessPorts] = False,
        dims: DimsSource = None,
        limits: Mapping[str, int] | None = None,
        path: str | None = None,
        state_params: WeightParamsTree | None = None,
        axis_names: Iterable[str] = (),
    ) -> None:
        set_field = object.__setattr__
        set_field(self, "path", _default_path(dims, next(iter(processes.values()), None)) if path is None else path)
        for ports, process in processes.items():
            if not isinstance(ports, ProcessPorts) or not callable(process):
                raise self._error(
                    f"processes map `ProcessPorts` to functions, got {value_repr(ports)}: {value_repr(process)}"
                )
        fixed_ports = frozenset(processes) if fixed is True else frozenset(fixed or ())
        if not fixed_ports <= set(processes):
            unknown = sorted(map(str, fixed_ports - set(processes)))
            raise self._error(f"`fixed` names ports without a process: {unknown}")
        fixed_ports |= {ports for ports, process in processes.items() if not _takes_rng(process)}
        sizes, origins = _bound_dims(dims, processes)
        limits = dict(limits or {})
        for field_name, table, least in (("dims", sizes, 0), ("limits", limits, 1)):
            for name, size in table.items():
                if not isinstance(name, str) or isinstance(size, bool) or not isinstance(size, int) or size < least:
                    raise self._error(
                        f"`{field_name}` maps names to sizes >= {least}, got {value_repr(name)}={value_repr(size)}"
                    )
        if set(sizes) & set(limits):
            raise self._error(f"{sorted(set(sizes) & set(limits))} are both bound and limited")
        axis_names = tuple(axis_names)
        if not all(isinstance(name, str) and name for name in axis_names):
            raise self._error(f"`axis_names` must be non-empty strings, got {value_repr(axis_names)}")
        set_field(self, "weight_params", weight_params)
        set_field(self, "state_params", {} if state_params is None else state_params)
        set_field(self, "axis_names", tuple(dict.fromkeys(axis_names)))
        set_field(self, "fixed", fixed_ports)
        set_field(self, "dims", MappingProxyType(sizes))
        set_field(self, "limits", MappingProxyType(limits))
        set_field(self, "_origins", MappingProxyType(origins))
        checked = {ports: self._checked_at_make_time(ports, _as_process(fn)) for ports, fn in processes.items()}
        set_field(self, "processes", MappingProxyType(checked))

    def _checked_at_make_time(self, ports: ProcessPorts, process: Process) -> Process:
        """`process`, standing in by its contract once that is verified (see `stand_in`)."""
        contract = check_contract(
            process,
            ports,
            self.weight_params,
            path=self.path,
            dims=self.dims,
            uses_rng=ports not in self.fixed,
            limits=self.limits,
            origins=self._origins,
            state_params=self.state_params,
            axis_names=self.axis_names,
        )
        return process if contract is None else stand_in(process, contract)

    @classmethod
    def from_process(
        cls,
        weight_params: WeightParamsTree,
        process: Process | FixedProcess,
        ports: ProcessPorts,
        *,
        fixed: bool = False,
        dims: DimsSource = None,
        limits: Mapping[str, int] | None = None,
    ) -> "Component":
        """A component with one process: `(weights, inputs, rng)`, or `(weights, inputs)` if it uses no randomness.

        `fixed=True` declares that a function taking an rng ignores it (it is then called
        with `None`); a function without one is fixed anyway.
        """
        path = _default_path(dims, process)
        return cls(weight_params, {ports: process}, fixed=fixed, dims=dims, limits=limits, path=path)

    @classmethod
    def from_pipeline(
        cls,
        weight_params: WeightParamsTree,
        pipeline: Pipeline | FixedPipeline,
        ports: ProcessPorts | None = None,
        *,
        fixed: bool = False,
        dims: DimsSource = None,
        limits: Mapping[str, int] | None = None,
    ) -> "Component":
        """A component whose one process is a pipeline: `(weights, x, rng) -> y`, or `(weights, x) -> y`.

        `ports` defaults to the pipeline's own jaxtyping annotations of `x` and its return.
        A pipeline without an rng is fixed; `fixed=True` declares that one taking an rng
        ignores it, which is how a component whose randomness depends on its config
        (dropout with a keep rate of 1) says so.
        """
        ports = _pipeline_ports(pipeline, ports)
        path = _default_path(dims, pipeline)
        process: Process | FixedProcess
        if _takes_rng(pipeline):
            run = typing.cast(Pipeline, pipeline)
            process = lambda w, inputs, rng: {Output: run(w, inputs[Input], rng)}  # noqa: E731
        else:
            run_fixed = typing.cast(FixedPipeline, pipeline)
            process = lambda w, inputs: {Output: run_fixed(w, inputs[Input])}  # noqa: E731
        return cls(weight_params, {ports: process}, fixed=fixed, dims=dims, limits=limits, path=path)

    @classmethod
    def from_stateful(
        cls,
        weight_params: WeightParamsTree,
        state_params: WeightParamsTree,
        pipeline: StatefulPipeline | FixedStatefulPipeline,
        ports: ProcessPorts | None = None,
        *,
        fixed: bool = False,
        dims: DimsSource = None,
        limits: Mapping[str, int] | None = None,
        axis_names: Iterable[str] = (),
    ) -> "Component":
        """A component with state, from one function `(weights, x, state, rng, *, train) -> (y, new_state)`.

        It gives two processes, told apart by their outputs:

        * training, `(Input, State) -> (Output, State)`: `pipeline(..., train=True)`;
        * evaluation, `(Input, State) -> (Output)`: `pipeline(..., train=False)`, whose
          new state is dropped (evaluation reads the state, never changes it).

        `component.apply(weights, x, state, train=...)` runs the one asked for. The ports'
        annotations are the pipeline's, of `x` and of the first item of its return
        (`tuple[Float[Array, "h w c"], jm.Weights]`), unless `ports` (a pipeline's) gives
        them; the state's contract is `state_params`. The rng is the fourth positional
        parameter, as for `from_pipeline` the third.
        """
        x_hint, y_hint = _stateful_hints(pipeline, ports)
        path = _default_path(dims, pipeline)
        run: StatefulPipeline = (
            typing.cast(StatefulPipeline, pipeline)
            if _takes_rng(pipeline, slots=4)
            else _with_ignored_rng(typing.cast(FixedStatefulPipeline, pipeline))
        )

        def train(weights: Weights, inputs: Mapping[str, Any], rng: Array | None) -> dict[str, Any]:
            y, new_state = run(weights, inputs[Input], inputs[State], rng, train=True)
            return {Output: y, State: new_state}

        def evaluate(weights: Weights, inputs: Mapping[str, Any], rng: Array | None) -> dict[str, Any]:
            return {Output: run(weights, inputs[Input], inputs[State], rng, train=False)[0]}

        processes: dict[ProcessPorts, Process] = {
            make_ports({Input: x_hint, State: None}, {Output: y_hint, State: None}): train,
            make_ports({Input: x_hint, State: None}, {Output: y_hint}): evaluate,
        }
        return cls(
            weight_params,
            processes,
            fixed=fixed or not _takes_rng(pipeline, slots=4),
            dims=dims,
            limits=limits,
            path=path,
            state_params=state_params,
            axis_names=axis_names,
        )

    from_fixed_pipeline = from_pipeline
    """Alias of `from_pipeline` (which takes fixed pipelines too), kept from the seed's vocabulary."""
    from_fixed_process = from_process
    """Alias of `from_process` (which takes fixed processes too), kept from the seed's vocabulary."""

    def __call__(self, weights: Weights, x: Array, /, rng: Array | None = None, **side_inputs: Array) -> Array:
        """The `Output` of the process whose inputs are `Input` (`x`) and the `side_inputs`.

        `rng=None` runs a random process in evaluation mode (the library's dropout is then
        the identity). Where several processes take those inputs, the one whose only output
        is `Output` runs; `run` returns every output of any process.

        Raises:
            ArgumentError: no process takes those inputs and returns `Output`.
        """
        ports = self._find(frozenset((Input, *side_inputs)), Output)
        return self.processes[ports](weights, {Input: x, **side_inputs}, self._rng_for(ports, rng))[Output]

    def run(
        self,
        weights: Weights,
        inputs: Mapping[str, Array],
        rng: Array | None = None,
        *,
        outputs: str | Iterable[str] | None = None,
    ) -> Mapping[str, Array]:
        """Every output of the process that takes exactly these inputs (and gives `outputs`, if named).

        Where several processes take these inputs, the one whose outputs include all the
        others' runs: an attention's `(Input, mask) -> (Output, attn)` rather than its
        `(Input, mask) -> (Output)`.

        Raises:
            ArgumentError: no process matches, or several do and none gives every output
                of the others, and `outputs` does not choose.
        """
        wanted = None if outputs is None else frozenset((outputs,) if isinstance(outputs, str) else outputs)
        ports = self._find(frozenset(inputs), None, wanted)
        return self.processes[ports](weights, inputs, self._rng_for(ports, rng))

    def apply(
        self,
        weights: Weights,
        x: Array,
        state: Weights,
        /,
        rng: Array | None = None,
        *,
        train: bool,
        **side_inputs: Array,
    ) -> tuple[Array, Weights]:
        """`(y, new_state)` of a stateful process: its `Output`, and its new state in training.

        With `train=True` it runs the process `(Input, State, *side_inputs) -> (Output,
        State)` (batch statistics, updated running values); with `train=False` the process
        `(Input, State, *side_inputs) -> (Output)` (the running values), and returns `state`
        itself as the new state.

        Raises:
            ArgumentError: the component has no such process.
        """
        inputs: dict[str, Any] = {Input: x, State: state, **side_inputs}
        wanted = frozenset((Output, State) if train else (Output,))
        ports = self._find(frozenset(inputs), None, wanted)
        outputs = self.processes[ports](weights, inputs, self._rng_for(ports, rng))
        new_state: Weights = outputs[State] if train else state  # type: ignore[assignment]  # a tree, not an array
        return outputs[Output], new_state

    def _rng_for(self, ports: ProcessPorts, rng: Array | None) -> Array | None:
        return None if ports in self.fixed else rng

    def _find(self, inputs: frozenset[str], gives: str | None, outputs: frozenset[str] | None = None) -> ProcessPorts:
        """The ports of the process with these inputs (that gives `gives`, or has exactly `outputs`)."""
        found = [
            p
            for p in self.processes
            if p.inputs == inputs
            and (gives is None or gives in p.outputs)
            and (outputs is None or p.outputs == outputs)
        ]
        if len(found) > 1 and gives is not None:
            found = [p for p in found if p.outputs == {gives}] or found
        elif len(found) > 1:
            found = [p for p in found if all(q.outputs <= p.outputs for q in found)] or found
        if len(found) != 1:
            which = "no" if not found else "more than one"
            gives_text = (
                f" that gives `{gives}`" if gives else f" with the outputs {sorted(outputs)}" if outputs else ""
            )
            raise self._error(
                f"has {which} process taking {sorted(inputs)}{gives_text}"
                f"{'; choose with `outputs=`' if found else ''}. {self._listing()}"
            )
        return found[0]

    def get_process(self, ports: ProcessPorts) -> Process:
        """The process with these port names.

        Raises:
            ArgumentError: there is none; the message lists the processes there are.
        """
        if ports not in self.processes:
            raise self._error(f"has no process {ports}. {self._listing()}")
        return self.processes[ports]

    def get_fixed_process(self, ports: ProcessPorts) -> FixedProcess:
        """The process with these port names, as `(weights, inputs) -> outputs`.

        Raises:
            ArgumentError: there is none, or it uses randomness (it is not fixed).
        """
        process = self.get_process(ports)
        if ports not in self.fixed:
            raise self._error(
                f"has a process {ports} that uses randomness, so it has no fixed form; call it with an rng: "
                f"`component.run(weights, inputs, rng)`. {self._listing()}"
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
        stored = next((p for p in self.processes if p == ports), ports)  # the stored ports carry the annotations
        return checked_process(
            self.get_process(ports),
            stored,
            path=self.path,
            dims=self.dims,
            limits=self.limits,
            origins=self._origins,
            state_params=self.state_params,
        )

    @property
    def checked_pipeline(self) -> Pipeline:
        """The pipeline as `(weights, x, rng) -> y`, every call checked as `checked()` does."""
        process = self.checked(pipeline_ports)
        return lambda weights, x, rng: process(weights, {Input: x}, rng)[Output]

    def _error(self, what: str) -> ArgumentError:
        return ArgumentError(f"component `{self.path}` {what}")

    def _listing(self) -> str:
        listed = [f"{p} [{'fixed' if p in self.fixed else 'uses rng'}]" for p in sorted(self.processes, key=str)]
        return f"It has: {', '.join(listed) or 'no processes'}"


def _takes_rng(fn: Callable[..., Any], slots: int = 3) -> bool:
    """Whether `fn` takes an rng: a third (`slots`-th) positional parameter without a default, or defaulting to `None`.

    A parameter with another default (`inner=inner`, binding a loop variable) is not one.
    """
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # no signature to read: assume the full form
        return True
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    positional_slots = [p for p in parameters if p.kind in positional and p.default in (inspect.Parameter.empty, None)]
    return len(positional_slots) >= slots or any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters)


def _as_process(fn: Process | FixedProcess) -> Process:
    """`fn` as `(weights, inputs, rng) -> outputs`: one that takes no rng is given none."""
    if _takes_rng(fn):
        return typing.cast(Process, fn)
    fixed = typing.cast(FixedProcess, fn)
    return lambda weights, inputs, rng: fixed(weights, inputs)


def _with_ignored_rng(pipeline: FixedStatefulPipeline) -> StatefulPipeline:
    def run(weights: Weights, x: Array, state: Weights, rng: Array | None, /, *, train: bool) -> tuple[Array, Weights]:
        return pipeline(weights, x, state, train=train)

    return run


def _stateful_hints(fn: Callable[..., Any], ports: ProcessPorts | None) -> tuple[Any, Any]:
    """The annotations of a stateful pipeline's `x` and `y`: from `ports`, else from its own annotations."""
    if ports is not None:
        return _pipeline_ports(fn, ports).input_types[Input], ports.output_types[Output]
    x_hint, returned = _x_and_return_hints(fn)
    items = typing.get_args(returned)  # `tuple[y, state]`
    return x_hint, items[0] if items else None


def _x_and_return_hints(fn: Callable[..., Any]) -> tuple[Any, Any]:
    """The annotations of a pipeline's `x` (its second parameter) and of its return; `None` where absent."""
    hints = typing.get_type_hints(fn) if inspect.isfunction(fn) else {}
    params = list(inspect.signature(fn).parameters)
    return hints.get(params[1]) if len(params) > 1 else None, hints.get("return")


def _pipeline_ports(fn: Callable[..., Any], ports: ProcessPorts | None) -> ProcessPorts:
    if ports is None:
        x_hint, y_hint = _x_and_return_hints(fn)
        return make_ports({Input: x_hint}, {Output: y_hint})
    if ports != pipeline_ports:
        raise ArgumentError(f"a pipeline's ports are {pipeline_ports}, got {ports}")
    return ports


def _bound_dims(source: DimsSource, processes: Mapping[ProcessPorts, Any]) -> tuple[dict[str, int], dict[str, str]]:
    """The sizes `dims=` binds, and where each came from (`Linear.n_in`, or `dims`).

    A config binds those of its int fields that are named in the processes' annotations.
    """
    sizes: dict[str, int] = {}
    origins: dict[str, str] = {}
    for part in source if isinstance(source, list) else [] if source is None else [source]:
        if isinstance(part, Mapping):
            sizes.update(part)
            origins.update(dict.fromkeys(part, "component dims"))
            continue
        hints = [hint for ports in processes for hint in (*ports.input_types.values(), *ports.output_types.values())]
        named = {name for hint in hints for name in dim_names(hint)}
        found = {n: getattr(part, n) for n in sorted(named) if _is_size(getattr(part, n, None))}
        sizes.update(found)
        origins.update({n: f"{type(part).__name__}.{n}" for n in found})
    return sizes, origins


def _is_size(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _default_path(dims: DimsSource, fn: object) -> str:
    """The enclosing scopes' path; outside any, the config's class name, else the function's name."""
    if current_path():
        return current_path()
    for part in dims if isinstance(dims, list) else [dims]:
        if part is not None and not isinstance(part, Mapping):
            return type(part).__name__
    name = getattr(fn, "__qualname__", "")
    return ".".join(n for n in name.split(".") if n not in ("<locals>", "<lambda>")) or "component"
