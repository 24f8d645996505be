"""One generic test over every library component (the optax pattern).

For each config class: every drawn valid config makes (so its contracts hold at make time)
and gives weights matching its spec; one field pushed out of its range raises
`ConfigError` naming that field and nothing else; a drawn config's component meets its
contracts on real numbers under `jit` and `vmap`.
"""

from typing import Any

import jax.random as jr
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxmake as jm
from jaxmake import components as jmc
from jaxmake.testing import assert_contracts, configs, invalid_configs

# Each library config class, with the fields held fixed to make cross-field rules easy to meet
# (and `scan_unroll` at 1: it only multiplies compile time here; tests/components/test_transformer.py
# checks that unrolling changes nothing).
LIBRARY: dict[type[Any], dict[str, Any]] = {
    jmc.Linear: {},
    jmc.Mlp: {},
    jmc.MlpLayerNorm: {},
    jmc.Dropout: {},
    jmc.LayerNorm: {},
    jmc.RMSNorm: {},
    jmc.Embeddings: {},
    jmc.PositionalEncoding: {},
    jmc.TensorPositionalEncoding: {"input_channels": 3, "output_channels": 3, "dim_encoding": 3},
    jmc.Patches: {"h": 4, "w": 6, "n_sections_h": 2, "n_sections_w": 3, "mlp_n_hidden": (4,)},
    # Every stride and padding fits a 5 x 5 image with this kernel and dilation (spanning 5 x 3).
    jmc.Conv: {"h": 5, "w": 5, "n_in": 2, "n_out": 4, "groups": 2, "kernel": (3, 3), "dilation": (2, 1)},
    jmc.MaxPool: {"h": 5, "w": 5, "window": (2, 3)},
    jmc.AvgPool: {"h": 5, "w": 5, "window": (3, 2)},
    jmc.GlobalAvgPool: {},
    jmc.BatchNorm: {"axis_name": "batch"},
    jmc.ResidualBlock: {"h": 3, "w": 4, "axis_name": "batch"},
    jmc.ResNet: {"hwc": (3, 3, 1), "widths": (2,), "blocks_per_stage": 1, "axis_name": "batch"},
    jmc.SelfMultiHeadAttn: {"n_heads": 2, "dim_model": 4},
    jmc.TransformerLayer: {"n_heads": 2, "dim_model": 4, "mlp_n_hidden": (4,)},
    jmc.TransformerEncoder: {"n_heads": 2, "dim_model": 4, "mlp_n_hidden": (4,), "n_tfe_layers": 2, "scan_unroll": 1},
    jmc.Vit: {
        "n_heads": 2,
        "dim_model": 4,
        "mlp_n_hidden": (4,),
        "n_tfe_layers": 1,
        "hwc": (4, 4, 1),
        "n_patches_side": 2,
        "mlp_n_hidden_patches": (4,),
        "scan_unroll": 1,
    },
    jmc.Gpt: {"n_heads": 2, "dim_model": 4, "mlp_n_hidden": (4,), "n_tfe_layers": 1, "vocab_size": 5, "n_ctx": 4}
    | {"scan_unroll": 1},
}


def _id(cls: type[Any]) -> str:
    return cls.__name__


@pytest.mark.parametrize("cls", LIBRARY, ids=_id)
@given(data=st.data())
def test_every_drawn_config_makes_with_weights_matching_its_spec(cls: type[Any], data: st.DataObject) -> None:
    config = data.draw(configs(cls, **LIBRARY[cls]))
    component = cls.make(config)
    assert isinstance(component, jm.Component)
    jm.check_weights(component.weight_params, jm.abstract_weights(component.weight_params))
    assert component.processes, f"{cls.__name__} makes a component without processes"


@pytest.mark.parametrize("cls", LIBRARY, ids=_id)
@given(data=st.data())
def test_one_field_out_of_range_raises_config_error_naming_it(cls: type[Any], data: st.DataObject) -> None:
    field, kwargs = data.draw(invalid_configs(cls, **LIBRARY[cls]))
    with pytest.raises(jm.ConfigError, match=rf"^`{cls.__name__}\.{field}`="):
        cls(**kwargs)


TRANSFORMERS = (jmc.SelfMultiHeadAttn, jmc.TransformerLayer, jmc.TransformerEncoder, jmc.Vit, jmc.Gpt)
"""The classes whose every drawn config compiles several processes of attention: one example
each here (their numerics and processes have tests of their own), two for the others."""


def _meets_its_contracts(cls: type[Any], data: st.DataObject) -> None:
    config = data.draw(configs(cls, **LIBRARY[cls]))
    key, int_high = jr.key(data.draw(st.integers(0, 2**16))), LIBRARY[cls].get("vocab_size", 2)
    half = getattr(config, "dtype", "float32") != "float32"  # a batch rounds in another order than one example
    assert_contracts(cls.make(config), key, int_high=int_high, tolerance=2e-2 if half else 2e-5)


@pytest.mark.parametrize("cls", [cls for cls in LIBRARY if cls not in TRANSFORMERS], ids=_id)
@settings(max_examples=2)
@given(data=st.data())
def test_drawn_components_meet_their_contracts_on_real_numbers(cls: type[Any], data: st.DataObject) -> None:
    _meets_its_contracts(cls, data)


@pytest.mark.parametrize("cls", TRANSFORMERS, ids=_id)
@settings(max_examples=1)
@given(data=st.data())
def test_drawn_transformers_meet_their_contracts_on_real_numbers(cls: type[Any], data: st.DataObject) -> None:
    _meets_its_contracts(cls, data)


def test_every_public_config_class_is_covered() -> None:
    # Field bases without a `make` (`TransformerFields`) are not components.
    classes = {v for v in vars(jmc).values() if isinstance(v, type) and issubclass(v, jm.Config) and hasattr(v, "make")}
    assert classes == set(LIBRARY), f"not covered: {sorted(c.__name__ for c in classes - set(LIBRARY))}"
