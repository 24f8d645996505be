"""`Patches`: an image cut into patches, each patch through an `Mlp` (the seed's "dirty patches")."""

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from jaxtyping import Array, Float

import jaxmake as jm
from jaxmake.components._fields import Activation, KeepRate, Size
from jaxmake.components._linear import InnerMlpConfigs, Mlp
from jaxmake.components._precision import Policy, PrecisionFields


@runtime_checkable
class PatchesConfigs(InnerMlpConfigs, Protocol):
    @property
    def dim_out(self) -> int: ...
    @property
    def n_sections_w(self) -> int: ...
    @property
    def n_sections_h(self) -> int: ...
    @property
    def w(self) -> int: ...
    @property
    def h(self) -> int: ...
    @property
    def ch(self) -> int: ...


_IMAGE = Float[Array, "h w ch"]
_RAW = Float[Array, "n_patches patch_size"]
PATCHES_PORTS = jm.make_ports({jm.Input: _IMAGE}, {jm.Output: Float[Array, "n_patches dim_out"], "patches": _RAW})
"""The ports of `Patches`' second process: the image -> the tokens and the raw patches.

Ports compare by name: this finds the process whatever the precision (the component's own
ports annotate the tokens with its compute dtype)."""


class Patches(PrecisionFields):
    """An image cut, channel by channel, into a grid of patches, each patch through an `Mlp`.

    Per example; batch with `jax.vmap`. The image `[h, w, ch]` is cut into
    `n_sections_h x n_sections_w` sections of `patch_h x patch_w` pixels
    (`patch_h = h // n_sections_h`, `patch_w = w // n_sections_w`), separately for each
    channel: `n_patches = n_sections_h * n_sections_w * ch` patches of
    `patch_size = patch_h * patch_w` values. Token-major, patch `(i * n_sections_w + j) *
    ch + c` holds section row `i`, column `j` of channel `c`, its pixels row by row:
    value `r * patch_w + s` is `image[i * patch_h + r, j * patch_w + s, c]`.

    Processes, random when `dropout_keep_rate < 1` (else fixed):

    * the pipeline: `[h, w, ch] -> [n_patches, dim_out]`, the `Mlp` of every patch, in `dtype`;
    * `PATCHES_PORTS`, `(Input) -> (Output, "patches")`: the same tokens, and the raw
      patches `[n_patches, patch_size]` (in the image's dtype).

    Weights: `mlp`, an `Mlp(patch_size, mlp_n_hidden, dim_out)`.

    Args:
        dim_out: the width of each token.
        n_sections_w: sections across the width; divides `w`.
        n_sections_h: sections down the height; divides `h`.
        w: the image width in pixels.
        h: the image height in pixels.
        ch: the number of channels.
        mlp_n_hidden: the hidden widths of the `Mlp`, e.g. `(12,)`.
        mlp_activation: the `Mlp`'s activation.
        dropout_keep_rate: the `Mlp`'s dropout keep rate, in (0, 1].
        dtype, param_dtype, matmul_precision: the precision policy (see `PrecisionFields`).

    Raises:
        ConfigError: `n_sections_h` does not divide `h`, or `n_sections_w` does not divide `w`.

    Example:
        >>> patches = Patches.make(Patches(12, n_sections_w=7, n_sections_h=7, w=28, h=28, ch=1, mlp_n_hidden=(12,)))
        >>> weights = jm.make_weights(jax.random.key(0), patches.weight_params)
        >>> jax.tree.map(jnp.shape, weights)
        {'mlp': {'layer_0': {'b': (12,), 'w': (16, 12)}, 'layer_1': {'b': (12,), 'w': (12, 12)}}}
    """

    dim_out: Size
    n_sections_w: Size
    n_sections_h: Size
    w: Size
    h: Size
    ch: Size
    mlp_n_hidden: tuple[Size, ...]
    mlp_activation: Activation = "relu"
    dropout_keep_rate: KeepRate = 1.0

    def validate(self) -> None:
        for side, sections in (("h", "n_sections_h"), ("w", "n_sections_w")):
            if getattr(self, side) % getattr(self, sections):
                raise self.error(side, f"must be divisible by `{sections}`={getattr(self, sections)}")

    @classmethod
    def make(cls, config: PatchesConfigs) -> jm.Component:
        n_h, n_w = config.n_sections_h, config.n_sections_w
        patch_size, policy = (config.h // n_h) * (config.w // n_w), Policy(config)
        mlp = Mlp(
            patch_size,
            config.mlp_n_hidden,
            config.dim_out,
            config.mlp_activation,
            config.dropout_keep_rate,
            **policy.fields,
        )
        c = jm.make_children(mlp=mlp)

        def tokens_and_patches(weights: jm.Weights, inputs: Mapping[str, Array], rng: Array | None) -> dict[str, Array]:
            patches = cut_patches(inputs[jm.Input], n_h, n_w)
            return {jm.Output: c.mlp(weights, patches, rng), "patches": patches}

        def tokens(weights: jm.Weights, inputs: Mapping[str, Array], rng: Array | None) -> dict[str, Array]:
            return {jm.Output: tokens_and_patches(weights, inputs, rng)[jm.Output]}

        tokens_port = {jm.Output: policy.floats[Array, "n_patches dim_out"]}
        processes = {
            jm.make_ports({jm.Input: _IMAGE}, tokens_port): tokens,
            jm.make_ports({jm.Input: _IMAGE}, {**tokens_port, "patches": _RAW}): tokens_and_patches,
        }
        sizes = {"n_patches": n_h * n_w * config.ch, "patch_size": patch_size}
        fixed = config.dropout_keep_rate == 1.0
        return jm.Component(c.weight_params, processes, fixed=fixed, dims=[config, sizes])


def cut_patches(
    image: Float[Array, "h w ch"], n_sections_h: int, n_sections_w: int
) -> Float[Array, "n_patches patch_size"]:
    """Cut an image into `n_sections_h x n_sections_w` patches per channel, token-major.

    Args:
        image: an array of shape `(h, w, ch)`; `n_sections_h` divides `h` and
            `n_sections_w` divides `w`.
        n_sections_h: sections down the height.
        n_sections_w: sections across the width.

    Returns:
        An array of shape `(n_sections_h * n_sections_w * ch, patch_h * patch_w)`, in the
        order `Patches` documents.

    Example:
        >>> cut_patches(jnp.arange(8.0).reshape(2, 4, 1), 1, 2)
        Array([[0., 1., 4., 5.],
               [2., 3., 6., 7.]], dtype=float32)
    """
    h, w, ch = image.shape
    patch_h, patch_w = h // n_sections_h, w // n_sections_w
    sections = image.reshape(n_sections_h, patch_h, n_sections_w, patch_w, ch)
    return sections.transpose(0, 2, 4, 1, 3).reshape(n_sections_h * n_sections_w * ch, patch_h * patch_w)
