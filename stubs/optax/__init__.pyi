# Partial stub of optax (ships no `py.typed`): the names jaxmake uses, typed as optax
# documents them; any other name is `Any` (typeshed's convention for an incomplete stub).
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol, TypeAlias

import numpy as np
from jax import Array

Numeric: TypeAlias = Array | np.ndarray[Any, Any] | np.bool_ | np.number[Any] | bool | int | float | complex
Params: TypeAlias = Any
Updates: TypeAlias = Any
OptState: TypeAlias = Any
Schedule: TypeAlias = Callable[[Numeric], Numeric]
ScalarOrSchedule: TypeAlias = float | Array | Schedule

class TransformInitFn(Protocol):
    def __call__(self, params: Params) -> OptState: ...

class TransformUpdateFn(Protocol):
    def __call__(self, updates: Updates, state: OptState, params: Params | None = None) -> tuple[Updates, OptState]: ...

class GradientTransformation(NamedTuple):
    init: TransformInitFn
    update: TransformUpdateFn

class GradientTransformationExtraArgs(GradientTransformation): ...

def chain(*args: GradientTransformation) -> GradientTransformationExtraArgs: ...
def clip_by_global_norm(max_norm: Numeric) -> GradientTransformation: ...
def adamw(
    learning_rate: ScalarOrSchedule,
    b1: Numeric = 0.9,
    b2: Numeric = 0.999,
    eps: Numeric = 1e-8,
    eps_root: Numeric = 0.0,
    mu_dtype: Any | None = None,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: Any | Callable[[Params], Any] | None = None,
    *,
    nesterov: bool = False,
) -> GradientTransformationExtraArgs: ...
def partition(
    transforms: Mapping[Hashable, GradientTransformation],
    param_labels: Any | Callable[[Params], Any],
    *,
    mask_compatible_extra_args: bool = False,
) -> GradientTransformationExtraArgs: ...
def set_to_zero() -> GradientTransformation: ...
def identity() -> GradientTransformation: ...
def scale(step_size: Numeric) -> GradientTransformation: ...
def constant_schedule(value: Numeric) -> Schedule: ...
def linear_schedule(
    init_value: Numeric, end_value: Numeric, transition_steps: int, transition_begin: int = 0
) -> Schedule: ...
def cosine_decay_schedule(
    init_value: Numeric, decay_steps: int, alpha: Numeric = 0.0, exponent: Numeric = 1.0
) -> Schedule: ...
def warmup_cosine_decay_schedule(
    init_value: Numeric,
    peak_value: Numeric,
    warmup_steps: int,
    decay_steps: int,
    end_value: Numeric = 0.0,
    exponent: Numeric = 1.0,
) -> Schedule: ...
def join_schedules(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule: ...
def apply_updates(params: Params, updates: Updates) -> Params: ...
def __getattr__(name: str) -> Any: ...
