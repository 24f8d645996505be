"""`TrainConfig`: defaults, and a `ConfigError` for every kind of bad field."""

import dataclasses

import pytest

import jaxmake as jm
from jaxmake.training import TrainConfig


def test_defaults_are_the_digits_recipe() -> None:
    config = TrainConfig(steps=2000)
    assert (config.batch_size, config.learning_rate, config.warmup_fraction) == (64, 2e-3, 0.05)
    assert (config.schedule, config.weight_decay, config.clip_norm) == ("cosine", 0.05, 1.0)
    assert config.warmup_steps == 100
    assert (config.loss_scaling, config.loss_scale_period) == ("none", 2000)


def test_is_frozen() -> None:
    config = TrainConfig(steps=10)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.steps = 20  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": 0}, r"^`TrainConfig.steps`=0 must be >= 1$"),
        ({"steps": 10, "batch_size": 0}, r"^`TrainConfig.batch_size`=0 must be >= 1$"),
        ({"steps": 10, "learning_rate": 0.0}, r"^`TrainConfig.learning_rate`=0.0 must be > 0.0$"),
        ({"steps": 10, "warmup_fraction": 1.0}, r"^`TrainConfig.warmup_fraction`=1.0 must be < 1.0$"),
        ({"steps": 10, "weight_decay": -0.1}, r"^`TrainConfig.weight_decay`=-0.1 must be >= 0.0$"),
        ({"steps": 10, "clip_norm": 0.0}, r"^`TrainConfig.clip_norm`=0.0 must be > 0.0$"),
        ({"steps": 10, "eval_every": 0}, r"^`TrainConfig.eval_every`=0 must be >= 1$"),
        ({"steps": 10, "log_every": 0}, r"^`TrainConfig.log_every`=0 must be >= 1$"),
        ({"steps": 10, "checkpoint_every": 0}, r"^`TrainConfig.checkpoint_every`=0 must be >= 1$"),
        ({"steps": 10, "keep_checkpoints": 0}, r"^`TrainConfig.keep_checkpoints`=0 must be >= 1$"),
        ({"steps": 10, "seed": -1}, r"^`TrainConfig.seed`=-1 must be >= 0$"),
        ({"steps": 10, "schedule": "linear"}, r"^`TrainConfig.schedule`='linear' must be one of 'cosine', 'constant'$"),
        (
            {"steps": 10, "loss_scaling": "static"},
            r"^`TrainConfig.loss_scaling`='static' must be one of 'none', 'dynamic'$",
        ),
        ({"steps": 10, "loss_scale_period": 0}, r"^`TrainConfig.loss_scale_period`=0 must be >= 1$"),
        ({"steps": "10"}, r"^`TrainConfig.steps`='10' must be of type int, got str$"),
        ({"steps": 10.0}, r"^`TrainConfig.steps`=10.0 must be of type int, got float$"),
    ],
)
def test_bad_fields_raise_config_error(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(jm.ConfigError, match=message):
        TrainConfig(**kwargs)  # type: ignore[arg-type]


def test_an_int_is_accepted_for_a_float_field() -> None:
    assert TrainConfig(steps=10, learning_rate=1).learning_rate == 1
