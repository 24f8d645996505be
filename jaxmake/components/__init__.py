"""The component library: layers and models built on the jaxmake core.

Layouts are per example and token-major: a sequence is `[T, d]`, an image `[H, W, C]`;
batch with `jax.vmap`.
"""

from jaxmake.components._dropout import Dropout as Dropout
from jaxmake.components._dropout import DropoutConfigs as DropoutConfigs
from jaxmake.components._embedding import LOGITS_PORTS as LOGITS_PORTS
from jaxmake.components._embedding import Embeddings as Embeddings
from jaxmake.components._embedding import EmbeddingsConfigs as EmbeddingsConfigs
from jaxmake.components._fields import Activation as Activation
from jaxmake.components._fields import Eps as Eps
from jaxmake.components._fields import InitScale as InitScale
from jaxmake.components._fields import KeepRate as KeepRate
from jaxmake.components._fields import Size as Size
from jaxmake.components._functional import activation as activation
from jaxmake.components._functional import l1_loss as l1_loss
from jaxmake.components._functional import l2_loss as l2_loss
from jaxmake.components._functional import sigmoid_cross_entropy as sigmoid_cross_entropy
from jaxmake.components._functional import softmax_cross_entropy as softmax_cross_entropy
from jaxmake.components._linear import Linear as Linear
from jaxmake.components._linear import LinearConfigs as LinearConfigs
from jaxmake.components._linear import Mlp as Mlp
from jaxmake.components._linear import MlpConfigs as MlpConfigs
from jaxmake.components._linear import MlpLayerNorm as MlpLayerNorm
from jaxmake.components._linear import MlpLayerNormConfigs as MlpLayerNormConfigs
from jaxmake.components._norm import LayerNorm as LayerNorm
from jaxmake.components._norm import NormConfigs as NormConfigs
from jaxmake.components._norm import RMSNorm as RMSNorm
