"""Sharding on JAX's own engine: named rule presets for the library's logical axes.

The library's weights name their dims with these logical axes: `embed` (the model width),
`mlp` (a linear layer's outputs), `vocab` (embedding tables), `layers` (scan-stacked
copies). `RULES` maps each preset to a plain `jm.Rules` mapping; pass one with a mesh of
axes `data` and `model` to `jm.make_weights(rng, spec, mesh=mesh, rules=RULES["fsdp"])`:

* `dp`: data parallel; every weight replicated;
* `fsdp`: fully sharded data parallel; weights split over `data` along `embed`;
* `tp`: tensor parallel; `mlp` and `vocab` dims split over `model`;
* `fsdp_tp`: both.
"""

from collections.abc import Mapping

import jaxmake as jm

RULES: Mapping[str, jm.Rules] = {
    "dp": {},
    "fsdp": {"embed": "data"},
    "tp": {"mlp": "model", "vocab": "model"},
    "fsdp_tp": {"embed": "data", "mlp": "model", "vocab": "model"},
}
"""Rule presets by name (see the module docstring)."""

__all__ = ["RULES"]
