"""The public names of `jaxmake.training` are part of the contract (the CLI and examples use them)."""

import types

import jaxmake as jm
from jaxmake import training

PUBLIC = [
    "Batch",
    "CheckpointDamaged",
    "Checkpoints",
    "History",
    "LossFn",
    "LossScale",
    "LossScaledState",
    "LossScaling",
    "ProgressMode",
    "RunDirError",
    "RunDirNotShared",
    "Schedule",
    "StatefulLossFn",
    "StepPlan",
    "StatefulTask",
    "Task",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "check_shared",
    "decay_mask",
    "device_bytes",
    "load_metadata",
    "load_weights",
    "make_optimizer",
    "make_schedule",
    "measure_step",
    "plan_step",
    "record_results",
    "shuffled_batches",
    "train",
    "weight_labels",
]


def test_public_names_are_pinned() -> None:
    names = [
        name
        for name, value in vars(training).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    ]
    assert sorted(names) == sorted(PUBLIC)


def test_training_diverged_is_a_jaxmake_error() -> None:
    assert issubclass(training.TrainingDiverged, jm.JaxMakeError)
    assert issubclass(training.TrainingDiverged, FloatingPointError)
    assert issubclass(training.TrainConfig, jm.Config)
