"""The component library: layers and models built on the jaxmake core.

Layouts are per example and token-major: a sequence is `[T, d]`, an image `[H, W, C]`;
batch with `jax.vmap`.
"""

from jaxmake.components._attention import MASKED_PORTS as MASKED_PORTS
from jaxmake.components._attention import SelfMultiHeadAttn as SelfMultiHeadAttn
from jaxmake.components._attention import SelfMultiHeadAttnConfigs as SelfMultiHeadAttnConfigs
from jaxmake.components._dropout import Dropout as Dropout
from jaxmake.components._dropout import DropoutConfigs as DropoutConfigs
from jaxmake.components._embedding import LOGITS_PORTS as LOGITS_PORTS
from jaxmake.components._embedding import Embeddings as Embeddings
from jaxmake.components._embedding import EmbeddingsConfigs as EmbeddingsConfigs
from jaxmake.components._fields import MAX_SIZE as MAX_SIZE
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
from jaxmake.components._gpt import LOSS_PORTS as LOSS_PORTS
from jaxmake.components._gpt import Gpt as Gpt
from jaxmake.components._gpt import GptConfigs as GptConfigs
from jaxmake.components._gpt import generate as generate
from jaxmake.components._linear import InnerMlpConfigs as InnerMlpConfigs
from jaxmake.components._linear import Linear as Linear
from jaxmake.components._linear import LinearConfigs as LinearConfigs
from jaxmake.components._linear import Mlp as Mlp
from jaxmake.components._linear import MlpConfigs as MlpConfigs
from jaxmake.components._linear import MlpLayerNorm as MlpLayerNorm
from jaxmake.components._linear import MlpLayerNormConfigs as MlpLayerNormConfigs
from jaxmake.components._norm import LayerNorm as LayerNorm
from jaxmake.components._norm import NormConfigs as NormConfigs
from jaxmake.components._norm import RMSNorm as RMSNorm
from jaxmake.components._patches import PATCHES_PORTS as PATCHES_PORTS
from jaxmake.components._patches import Patches as Patches
from jaxmake.components._patches import PatchesConfigs as PatchesConfigs
from jaxmake.components._patches import cut_patches as cut_patches
from jaxmake.components._positional import PositionalEncodeStrategy as PositionalEncodeStrategy
from jaxmake.components._positional import PositionalEncoding as PositionalEncoding
from jaxmake.components._positional import PositionalEncodingConfigs as PositionalEncodingConfigs
from jaxmake.components._positional import TensorPositionalEncodeStrategy as TensorPositionalEncodeStrategy
from jaxmake.components._positional import TensorPositionalEncoding as TensorPositionalEncoding
from jaxmake.components._positional import TensorPositionalEncodingConfigs as TensorPositionalEncodingConfigs
from jaxmake.components._positional import sinusoidal_encoding as sinusoidal_encoding
from jaxmake.components._transformer import TransformerEncoder as TransformerEncoder
from jaxmake.components._transformer import TransformerEncoderConfigs as TransformerEncoderConfigs
from jaxmake.components._transformer import TransformerEncoderFields as TransformerEncoderFields
from jaxmake.components._transformer import TransformerFields as TransformerFields
from jaxmake.components._transformer import TransformerLayer as TransformerLayer
from jaxmake.components._transformer import TransformerLayerConfigs as TransformerLayerConfigs
from jaxmake.components._transformer import stack_layers as stack_layers
from jaxmake.components._transformer import unstack_layers as unstack_layers
from jaxmake.components._vit import LOGITS as LOGITS
from jaxmake.components._vit import Vit as Vit
from jaxmake.components._vit import VitConfigs as VitConfigs
