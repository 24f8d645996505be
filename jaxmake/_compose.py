"""Composing components: children named once, `sequential`, `merge_params`.

`make_children(fc1=Linear(8, 32), ...)` makes each child under its own name, which is at
once its scope (the path in its errors), its key in the parent's weight spec and the key
its call reads from the parent's weights:

    c = jm.make_children(norm=LayerNorm(8), fc1=Linear(8, 32), fc2=Linear(32, 8))
    spec = c.weight_params                       # {"norm": ..., "fc1": ..., "fc2": ...}
    y = c.fc2(weights, gelu(c.fc1(weights, c.norm(weights, x))))   # the parent's weights

Children with state compose the same way: `c.state_params` holds the state spec of each
child that has one, under its name, and `c.bn.apply(weights, x, state, train=train)`
reads `state["bn"]` and returns the child's output and its new state.
"""

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import jax.random as jr
from jax import Array

from jaxmake._component import Component, Pipeline, scope
from jaxmake._errors import ArgumentError, WeightsError, checks_own_arguments
from jaxmake._weights import WeightParamsTree, Weights


@runtime_checkable
class Maker(Protocol):
    """A config whose class has a `make` classmethod: `maker.make(maker)` makes its component."""

    def make(self, config: Any, /) -> Component: ...


class Child:
    """A sub-component and its name, called on its parent's weights.

    Args:
        name: the child's key in the parent's weights (and the last part of its path).
        component: the child.
    """

    def __init__(self, name: str, component: Component) -> None:
        self.name, self.component = name, component

    def __call__(self, weights: Weights, x: Array, /, rng: Array | None = None, **side_inputs: Array) -> Array:
        """`component(weights[name], x, rng, **side_inputs)`: see `Component.__call__`."""
        return self.component(self.weights(weights), x, rng, **side_inputs)

    def run(
        self,
        weights: Weights,
        inputs: Mapping[str, Array],
        rng: Array | None = None,
        *,
        outputs: str | Iterable[str] | None = None,
    ) -> Mapping[str, Array]:
        """`component.run(weights[name], inputs, rng, outputs=outputs)`: see `Component.run`."""
        return self.component.run(self.weights(weights), inputs, rng, outputs=outputs)

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
        """`component.apply(weights[name], x, state[name], rng, train=train)`: see `Component.apply`.

        Returns the child's output and its new state (its own, to store under `name`).
        """
        return self.component.apply(self.weights(weights), x, self.state(state), rng, train=train, **side_inputs)

    def weights(self, weights: Weights) -> Weights:
        """The child's slice of its parent's weights, `weights[name]`.

        Raises:
            WeightsError: `weights` has no `name` (the child was given its own weights, or
                another component's).
        """
        return self._slice(weights, "weights")

    def state(self, state: Weights) -> Weights:
        """The child's slice of its parent's state, `state[name]`.

        Raises:
            WeightsError: `state` has no `name`.
        """
        return self._slice(state, "state")

    def _slice(self, tree: Weights, what: str) -> Weights:
        if not isinstance(tree, Mapping) or self.name not in tree:
            held = sorted(map(str, tree)) if isinstance(tree, Mapping) else type(tree).__name__
            raise WeightsError(
                f"child `{self.name}` (`{self.component.path}`) is called on its parent's {what}, which hold "
                f"it under `{self.name}`; these hold {held}"
            )
        part: Weights = tree[self.name]
        return part


class Children(Mapping[str, Child]):
    """Named children, made by `make_children`: a mapping of name to `Child`, and attributes.

    `c.fc1` and `c["fc1"]` are the same `Child` (attributes serve every name that is not a
    method of a mapping, such as `keys`).
    """

    def __init__(self, components: Mapping[str, Component]) -> None:
        self._children = {name: Child(name, component) for name, component in components.items()}

    @property
    def weight_params(self) -> dict[str, WeightParamsTree]:
        """The parent's weight spec: `{name: child.component.weight_params}`."""
        return merge_params(self)

    @property
    def state_params(self) -> dict[str, WeightParamsTree]:
        """The parent's state spec: `{name: child.component.state_params}` for each child that has state."""
        return {name: child.component.state_params for name, child in self.items() if child.component.state_params}

    @property
    def axis_names(self) -> tuple[str, ...]:
        """The named axes the children average over (see `Component.axis_names`), for the parent to declare."""
        return tuple(dict.fromkeys(name for child in self.values() for name in child.component.axis_names))

    def __getitem__(self, name: str) -> Child:
        if name not in self._children:
            raise ArgumentError(f"there is no child `{name}`; the children are {list(self._children)}")
        return self._children[name]

    def __getattr__(self, name: str) -> Child:
        if name.startswith("__") or name == "_children":
            raise AttributeError(name)
        return self[name]

    def __contains__(self, name: object) -> bool:
        return name in self._children

    def __iter__(self) -> Iterator[str]:
        return iter(self._children)

    def __len__(self) -> int:
        return len(self._children)


@checks_own_arguments
def make_children(**makers: Maker | Callable[[], Component]) -> Children:
    """Make each child under its own name: its scope, its weights key and its call's key at once.

    Args:
        **makers: for each name, a config whose class has `make` (`fc1=Linear(8, 32)`,
            made as `Linear.make(config)`), or a function of no arguments that makes the
            component (`dropout=lambda: Dropout.make(config)`, for a structural config).

    Returns:
        The `Children`, in the order given.

    Raises:
        ArgumentError: a value is neither (a `Component` made beforehand is refused: it was
            not made under its name, so its errors would not say where it is).

    Example:
        >>> from jaxmake.components import Linear
        >>> c = make_children(fc1=Linear(3, 8), fc2=Linear(8, 2))
        >>> jax.tree.map(jnp.shape, jm.abstract_weights(c.weight_params))
        {'fc1': {'b': (8,), 'w': (3, 8)}, 'fc2': {'b': (2,), 'w': (8, 2)}}
        >>> c.fc2.component.path
        'fc2'
    """
    made = {}
    for name, maker in makers.items():
        with scope(name):
            made[name] = _make(name, maker)
    return Children(made)


def _make(name: str, maker: object) -> Component:
    if isinstance(maker, Component):
        raise ArgumentError(
            f"child `{name}` is a component made beforehand; pass its config (or `lambda: X.make(config)`) "
            "so that it is made under its name"
        )
    make = getattr(maker, "make", None)
    component = make(maker) if callable(make) else maker() if callable(maker) else None
    if not isinstance(component, Component):
        raise ArgumentError(
            f"child `{name}` must be a config whose class has `make`, or a function that makes a component; "
            f"got {type(maker).__name__}"
        )
    return component


@checks_own_arguments
def sequential(components: Mapping[str, Component], sequence: Sequence[str]) -> Pipeline:
    """A pipeline running the named components' pipelines in order.

    Each runs on its own slice `weights[name]` with its own rng (`fold_in(rng, step)`);
    a name may appear more than once to share weights across steps. Called with
    `rng=None`, every step gets `None`: the library's components read that as evaluation
    mode (no dropout).

    Raises:
        ArgumentError: a name is not in `components`, or one lacks a pipeline.
    """
    for name in sequence:
        if name not in components:
            raise ArgumentError(f"`sequential` has no component `{name}`; it has {sorted(components)}")
    steps = [(name, components[name].pipeline) for name in sequence]

    def run(weights: Weights, x: Array, rng: Array | None) -> Array:
        for step, (name, pipeline) in enumerate(steps):
            x = pipeline(weights[name], x, None if rng is None else jr.fold_in(rng, step))
        return x

    return run


def merge_params(components: Mapping[str, Component | Child]) -> dict[str, WeightParamsTree]:
    """`{name: component.weight_params}`: the spec of a parent holding these components."""
    return {
        name: (part.component if isinstance(part, Child) else part).weight_params for name, part in components.items()
    }
