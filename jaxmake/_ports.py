"""Process ports: the named inputs and outputs of a process, with their shape annotations.

Ports compare and hash by their names only, so a process is found by names alone:
`component.processes[make_ports(("Input", "mask"), ("Output", "attn"))]`. The jaxtyping
annotation of each port rides along and is what the contracts check.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, TypeAlias

from jaxmake._errors import ArgumentError, checks_own_arguments, value_repr

Input: Final = "Input"
"""The name of the main input port: the `x` of a pipeline."""
Output: Final = "Output"
"""The name of the main output port: the `y` of a pipeline."""
State: Final = "State"
"""The name of the state port: a stateful process takes its component's state tree (the arrays
of its `state_params`, such as running statistics) here and, in training, returns the new one.
Its contract is the component's `state_params`, not an annotation."""

PortsSpec: TypeAlias = str | Iterable[str] | Mapping[str, Any]
"""One port name, several names, or a mapping of names to jaxtyping annotations (or `None`)."""


@dataclass(frozen=True)
class ProcessPorts:
    """The input and output port names of a process, and each port's annotation.

    Equality and hashing use the names only; `input_types` and `output_types` map each
    port to its jaxtyping annotation (e.g. `Float[Array, "T dim_model"]`) or `None`.
    Build them with `make_ports`.
    """

    inputs: frozenset[str]
    outputs: frozenset[str]
    input_types: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    output_types: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for side, names, types in (
            ("inputs", self.inputs, self.input_types),
            ("outputs", self.outputs, self.output_types),
        ):
            if not isinstance(names, frozenset) or not all(isinstance(n, str) and n for n in names):
                raise ArgumentError(
                    f"`ProcessPorts.{side}` must be a frozenset of non-empty port names, got {value_repr(names)}"
                )
            if set(types) - names:
                raise ArgumentError(
                    f"`ProcessPorts` has annotations for {sorted(set(types) - names)}, which are not {side}"
                )
        object.__setattr__(
            self, "input_types", MappingProxyType({n: self.input_types.get(n) for n in sorted(self.inputs)})
        )
        object.__setattr__(
            self, "output_types", MappingProxyType({n: self.output_types.get(n) for n in sorted(self.outputs)})
        )

    @property
    def annotated(self) -> bool:
        """Whether every port carries an annotation."""
        return all(t is not None for t in (*self.input_types.values(), *self.output_types.values()))

    def __str__(self) -> str:
        return f"({', '.join(sorted(self.inputs))}) -> ({', '.join(sorted(self.outputs))})"


checks_own_arguments(ProcessPorts.__init__)  # `__post_init__` checks the names, raising `ArgumentError`


@checks_own_arguments
def make_ports(inputs: PortsSpec, outputs: PortsSpec) -> ProcessPorts:
    """Build `ProcessPorts` from a name, a tuple of names, or a mapping name -> annotation.

    Example:
        >>> from jaxtyping import Array, Float
        >>> ports = make_ports({"Input": Float[Array, "T d"]}, "Output")
        >>> ports == make_ports("Input", ("Output",)), str(ports)
        (True, '(Input) -> (Output)')
    """
    input_types, output_types = _types_of(inputs), _types_of(outputs)
    return ProcessPorts(frozenset(input_types), frozenset(output_types), input_types, output_types)


def _types_of(spec: PortsSpec) -> dict[str, Any]:
    if isinstance(spec, str):
        return {spec: None}
    if isinstance(spec, Mapping):
        return dict(spec)
    if not isinstance(spec, Iterable):
        raise ArgumentError(
            f"ports are a name, a tuple of names or a mapping of names to annotations, got {value_repr(spec)}"
        )
    names = list(spec)
    if len(set(names)) != len(names):
        raise ArgumentError(f"port names must be unique, got {names}")
    return dict.fromkeys(names)


pipeline_ports: Final = make_ports(Input, Output)
"""The ports of a pipeline: `(Input) -> (Output)`."""
