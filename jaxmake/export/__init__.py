"""Export a process of a component with `jax.export`, and serve it with plain JAX and NumPy.

* `export(component, ports, *, batch=True)`: an `ExportedProcess` holding the
  `jax.export.Exported` of `(weights, inputs) -> outputs`, whose shapes come from the ports' annotations (free
  dims symbolic and limited by `component.limits`, bound dims concrete);
* `save(path, exported, weights, metadata)`: a folder with `model.jaxexport`,
  `weights.npz` (the flat weights) and `signature.json`; `load(path)` reads it back;
* `flat_weights(tree)` (`jm.flat_weights`): `{dotted path: array}`, the weights the artifact takes.
"""

from jaxmake._paths import flat_weights as flat_weights
from jaxmake.export._export import ARTIFACT as ARTIFACT
from jaxmake.export._export import BATCH as BATCH
from jaxmake.export._export import FORMAT as FORMAT
from jaxmake.export._export import SIGNATURE as SIGNATURE
from jaxmake.export._export import WEIGHTS as WEIGHTS
from jaxmake.export._export import ArtifactError as ArtifactError
from jaxmake.export._export import ExportedProcess as ExportedProcess
from jaxmake.export._export import export as export
from jaxmake.export._export import load as load
from jaxmake.export._export import save as save
