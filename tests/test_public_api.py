"""The public names are part of the contract: tests outside this repository use them."""

import types

import jaxmake as jm

PUBLIC = [
    "ArgumentError",
    "ArrayGen",
    "CHECKS_ENV_VAR",
    "abstract_inputs",
    "Component",
    "Config",
    "ConfigError",
    "FixedPipeline",
    "FixedProcess",
    "Input",
    "JaxMakeError",
    "Output",
    "Pipeline",
    "Process",
    "ProcessPorts",
    "ShapeError",
    "WeightParams",
    "WeightParamsTree",
    "Weights",
    "WeightsError",
    "abstract_weights",
    "check_weights",
    "Child",
    "Children",
    "DimsSource",
    "Maker",
    "make_children",
    "checks_own_arguments",
    "value_repr",
    "current_path",
    "fold_in_name",
    "get_at",
    "make_ports",
    "make_weights",
    "merge_params",
    "pipeline_ports",
    "recorded_contracts",
    "scope",
    "sequential",
    "set_at",
    "stack_params",
    "Rules",
    "ShardingError",
    "partition_spec",
    "weight_shardings",
    "FixedStatefulPipeline",
    "State",
    "StatefulPipeline",
    "make_state",
    "flat_weights",
    "match_paths",
    "path_matches",
    "weight_paths",
]


def test_public_names_are_pinned() -> None:
    names = [
        name for name, value in vars(jm).items() if not name.startswith("_") and not isinstance(value, types.ModuleType)
    ]
    assert sorted(names) == sorted(PUBLIC)


def test_error_hierarchy() -> None:
    assert issubclass(jm.ConfigError, jm.JaxMakeError) and issubclass(jm.ConfigError, ValueError)
    assert issubclass(jm.ShapeError, jm.JaxMakeError) and issubclass(jm.ShapeError, TypeError)
    assert issubclass(jm.WeightsError, jm.JaxMakeError) and issubclass(jm.WeightsError, ValueError)
