"""Build the seed's ViT, print its weights tree as the seed does, and run it on a batch.

Run: `python examples/vit_seed.py`
"""

from pprint import pprint

import jax
import jax.numpy as jnp

import jaxmake as jm
from jaxmake.components import Vit


def main() -> None:
    vit = Vit.make(Vit())  # the seed's configuration; every contract is checked here
    weights = jm.make_weights(jax.random.key(0), vit.weight_params)
    pprint(jax.tree.map(jnp.shape, weights))

    images = jax.random.uniform(jax.random.key(1), (8, 28, 28, 1))
    encode = jax.jit(jax.vmap(vit.fixed_pipeline, in_axes=(None, 0)))
    encodings = encode(weights, images)
    print(f"encodings of a batch of {images.shape[0]} images: {encodings.shape} (output token first)")
    n_params = sum(x.size for x in jax.tree.leaves(weights))
    print(f"{n_params} parameters")


if __name__ == "__main__":
    main()
