"""`TrainConfig`: every knob of the training loop, validated on construction."""

from typing import Annotated, Literal

from annotated_types import Interval

import jaxmake as jm

Schedule = Literal["cosine", "constant"]
"""The learning-rate shape after warmup: cosine decay to 0, or constant at the peak."""

LossScaling = Literal["none", "dynamic"]
"""Whether the loss is scaled before differentiation: not at all, or by a dynamic loss scale (for float16)."""


class TrainConfig(jm.Config):
    """How to train: optimizer, schedule, and how often to log, evaluate and checkpoint.

    The defaults are the digits ViT recipe: AdamW at a peak learning rate of 2e-3, weight
    decay 0.05 on matrices only, 5% linear warmup then cosine decay, batch 64.

    Args:
        steps: total optimizer steps of the run, in [1, 10**9]; a resumed run stops at
            the same total.
        batch_size: examples per step, in [1, 10**7]; read by the task's batch function
            (see `shuffled_batches`), not by the loop itself.
        learning_rate: peak learning rate of AdamW, in (0, 10].
        warmup_fraction: share of `steps` spent warming the learning rate up linearly
            from 0 to its peak, in [0, 1).
        schedule: after warmup, `"cosine"` decays the learning rate to 0 at `steps`;
            `"constant"` keeps it at the peak.
        weight_decay: decoupled weight decay of AdamW (Loshchilov and Hutter, 2019) per
            unit of learning rate, in [0, 10]; applied only to weights with 2 or more
            dims (matrices, embeddings), never to biases and norm scales.
        clip_norm: gradients are rescaled so that their global L2 norm is at most this,
            in (0, 10**6]; a large value disables clipping in effect.
        eval_every: evaluate every this many steps (and at the end), in [1, 10**9].
        log_every: add an entry to the metrics history and print it every this many
            steps, in [1, 10**9].
        checkpoint_every: save a checkpoint every this many steps (and at the end), in
            [1, 10**9].
        keep_checkpoints: how many of the latest checkpoints to keep on disk, in
            [1, 1000].
        seed: seed of the per-step PRNG keys (`fold_in(key(seed), step)`) and of the
            data order, in [0, 2**31 - 1].
        loss_scaling: `"none"`, or `"dynamic"` for a model that computes in float16, whose
            small gradients would otherwise underflow to 0: the loss is multiplied by a
            scale (first `2**15`) before differentiation and the gradients divided by it;
            a step whose gradients are not all finite is skipped (weights and optimizer
            state unchanged) and halves the scale; `loss_scale_period` consecutive finite
            steps double it. The history then also holds `loss_scale` and `skipped`.
            bfloat16 and float32 need no scaling.
        loss_scale_period: with `"dynamic"`, how many consecutive steps with finite
            gradients double the scale, in [1, 10**9].
        steps_per_call: at most this many steps run in one compiled call (a `lax.scan`
            over their batches), in [1, 10**6]; a call never crosses a log, evaluation or
            checkpoint step, so these fall on call edges and the history, checkpoints and
            exact resume are the same whatever its value. Fewer dispatches make small
            models much faster: each call costs a dispatch and a host round trip, more
            than a small model's step. The default, 1, runs one step per call, because
            on XLA's CPU backend the gradient of a convolution inside a loop runs about 30
            times slower than outside one (measured with jax 0.10: a ResNet step on
            digits took 1.46 s in a `lax.scan`, 0.054 s alone); give more for models
            without convolutions, or on a GPU.
        freeze: weight-path patterns of the weights not to train (see `jm.path_matches`:
            `fnmatch` patterns of dotted paths such as `encoder.tfe_layer_0.*`; a pattern
            naming a group selects every weight under it). As in a `.gitignore`, a pattern
            starting with `!` exempts what it selects, and the last pattern that selects a
            weight decides: `("*", "!*.lora_a", "!*.lora_b")` trains the LoRA adapters only.
            A frozen weight is never updated (it stays bit for bit as given, through
            resumes too), holds no optimizer state, and its gradient counts neither in
            the clipping norm nor in the history's `grad_norm`.
        learning_rate_factors: `(pattern, factor)` pairs: the updates of the weights a
            pattern selects are multiplied by `factor`, in (0, 1000] (weight decay
            included, as a learning rate would be); where several select a weight, the
            last decides; e.g. `(("embedding.*", 0.1),)`.

    Raises:
        ConfigError: a field is out of range or of the wrong type.

    Example:
        >>> TrainConfig(steps=2000).learning_rate
        0.002
        >>> TrainConfig(steps=0)
        Traceback (most recent call last):
        ...
        jaxmake._errors.ConfigError: `TrainConfig.steps`=0 must be >= 1
    """

    steps: Annotated[int, Interval(ge=1, le=10**9)]
    batch_size: Annotated[int, Interval(ge=1, le=10**7)] = 64
    learning_rate: Annotated[float, Interval(gt=0.0, le=10.0)] = 2e-3
    warmup_fraction: Annotated[float, Interval(ge=0.0, lt=1.0)] = 0.05
    schedule: Schedule = "cosine"
    weight_decay: Annotated[float, Interval(ge=0.0, le=10.0)] = 0.05
    clip_norm: Annotated[float, Interval(gt=0.0, le=1e6)] = 1.0
    eval_every: Annotated[int, Interval(ge=1, le=10**9)] = 100
    log_every: Annotated[int, Interval(ge=1, le=10**9)] = 10
    checkpoint_every: Annotated[int, Interval(ge=1, le=10**9)] = 500
    keep_checkpoints: Annotated[int, Interval(ge=1, le=1000)] = 3
    seed: Annotated[int, Interval(ge=0, le=2**31 - 1)] = 0
    loss_scaling: LossScaling = "none"
    loss_scale_period: Annotated[int, Interval(ge=1, le=10**9)] = 2000
    steps_per_call: Annotated[int, Interval(ge=1, le=10**6)] = 1
    freeze: tuple[str, ...] = ()
    learning_rate_factors: tuple[tuple[str, Annotated[float, Interval(gt=0.0, le=1000.0)]], ...] = ()

    def __post_init__(self) -> None:
        factors = self.learning_rate_factors
        if isinstance(factors, list | tuple):  # read back from JSON as `[["embedding.*", 0.1]]`
            pairs = tuple(tuple(pair) if isinstance(pair, list) else pair for pair in factors)
            object.__setattr__(self, "learning_rate_factors", pairs)
        super().__post_init__()

    def validate(self) -> None:
        for index, pattern in enumerate(self.freeze):
            if pattern in ("", "!"):
                raise self.error("freeze", f"item {index}: a pattern must not be empty")
        for index, (pattern, _) in enumerate(self.learning_rate_factors):
            if not pattern:
                raise self.error("learning_rate_factors", f"item {index}: a pattern must not be empty")

    @property
    def warmup_steps(self) -> int:
        """The number of warmup steps: `round(warmup_fraction * steps)`."""
        return round(self.warmup_fraction * self.steps)
