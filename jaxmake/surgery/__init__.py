"""Model surgery: new components made from trained ones, working on their weights by path.

* `lora`: low-rank adapters (LoRA) on the `Linear` layers that weight-path patterns select,
  checked at make time like any component; `lora_weights` adds freshly drawn adapters to
  the base weights, `merge_lora` folds them back in; `FREEZE_BASE` is the
  `TrainConfig.freeze` that trains the adapters only.
"""

from jaxmake.surgery._lora import FREEZE_BASE as FREEZE_BASE
from jaxmake.surgery._lora import LORA_A as LORA_A
from jaxmake.surgery._lora import LORA_B as LORA_B
from jaxmake.surgery._lora import lora as lora
from jaxmake.surgery._lora import lora_weights as lora_weights
from jaxmake.surgery._lora import merge_lora as merge_lora
