"""`ProcessPorts` and `make_ports`."""

import pytest
from jaxtyping import Array, Bool, Float

import jaxmake as jm


def test_ports_compare_and_hash_by_names_only() -> None:
    annotated = jm.make_ports(
        {"Input": Float[Array, "T d"], "mask": Bool[Array, "T T"]}, {"Output": Float[Array, "T d"]}
    )
    plain = jm.make_ports(("mask", "Input"), "Output")
    assert annotated == plain and hash(annotated) == hash(plain)
    assert {annotated: "found"}[plain] == "found"
    assert annotated != jm.make_ports(("Input", "mask"), ("Output", "attn"))


def test_annotations_ride_along() -> None:
    hint = Float[Array, "T d"]
    ports = jm.make_ports({"Input": hint}, ["Output", "attn"])
    assert ports.input_types == {"Input": hint}
    assert ports.output_types == {"Output": None, "attn": None}
    assert not ports.annotated
    assert jm.make_ports({"Input": Float[Array, "T"]}, {"Output": Float[Array, "T"]}).annotated


def test_str_and_pipeline_ports() -> None:
    assert str(jm.make_ports(("mask", "Input"), ("Output", "attn"))) == "(Input, mask) -> (Output, attn)"
    assert jm.pipeline_ports == jm.make_ports(jm.Input, jm.Output)
    assert (jm.Input, jm.Output) == ("Input", "Output")


def test_bad_ports_are_rejected() -> None:
    with pytest.raises(jm.ArgumentError, match="port names must be unique"):
        jm.make_ports(("x", "x"), "y")
    with pytest.raises(jm.ArgumentError, match=r"`ProcessPorts.inputs` must be a frozenset of non-empty port names"):
        jm.make_ports("", "y")
    with pytest.raises(jm.ArgumentError, match=r"has annotations for \['z'\], which are not inputs"):
        jm.ProcessPorts(frozenset({"x"}), frozenset({"y"}), {"z": None})
