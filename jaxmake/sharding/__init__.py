"""Sharding on JAX's own engine: named rule presets for the library's logical axes.

The library's weights name their dims with these logical axes: `embed` (the model width),
`mlp` (the hidden units of an `Mlp`: the outputs of its even layers, the inputs of its odd
ones), `heads` (attention's `q, k, v` columns and the rows of its output projection),
`vocab` (embedding tables and the language-model head's outputs), `layers` (scan-stacked
copies). `RULES` maps each preset to a plain `jm.Rules` mapping; pass one with a mesh of
axes `data` and `model` to `jm.make_weights(rng, spec, mesh=mesh, rules=RULES["fsdp"])`:

* `dp`: data parallel; every weight replicated;
* `fsdp`: fully sharded data parallel; weights split over `data` along `embed`;
* `tp`: tensor parallel (Megatron-LM, Shoeybi et al., 2019); `mlp`, `heads` and `vocab`
  dims split over `model`, so that a transformer layer's MLP and attention blocks each
  end in one all-reduce over `model` (attention also gathers its fused `kqv` weight: see
  `jaxmake.components.SelfMultiHeadAttn`);
* `fsdp_tp`: both.
"""

from collections.abc import Mapping

import jaxmake as jm
from jaxmake.sharding._mesh import make_mesh as make_mesh
from jaxmake.sharding._mesh import parse_mesh as parse_mesh

RULES: Mapping[str, jm.Rules] = {
    "dp": {},
    "fsdp": {"embed": "data"},
    "tp": {"mlp": "model", "heads": "model", "vocab": "model"},
    "fsdp_tp": {"embed": "data", "mlp": "model", "heads": "model", "vocab": "model"},
}
"""Rule presets by name (see the module docstring)."""

__all__ = ["RULES", "make_mesh", "parse_mesh"]
