"""Sampling speed of the character GPT: `generate` with the key/value cache against without.

Both paths draw the same tokens (greedy here: `top_k=1`, and the run checks it); the
uncached one re-runs the whole window (up to `n_ctx` tokens) for every new token, the cached
one runs each new token alone against the caches. For each path, prints the median over
`--repeats` of the seconds that sampling `--tokens` tokens after a one-token prompt takes
(compiled beforehand, results fetched), the tokens per second, and the speed-up, as JSON
lines. The model is `jaxmake train chars`'s (width 128, 2 layers) with `--n-ctx` positions
and random weights: the cost of a token depends on the shapes only.

    python benchmarks/decode.py --n-ctx 256 --tokens 256 --repeats 5
"""

import argparse
import json
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp

import jaxmake as jm
from jaxmake.cli._tasks import CHARS_GPT_FIELDS
from jaxmake.components import Gpt, generate


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Tokens per second of generate, cached against uncached.")
    parser.add_argument("--n-ctx", type=int, default=256)
    parser.add_argument("--tokens", type=int, default=256, help="new tokens per call, after a one-token prompt")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per path; the median is printed")
    parser.add_argument("--vocab-size", type=int, default=96)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    config = Gpt(**{**CHARS_GPT_FIELDS, "n_ctx": args.n_ctx, "vocab_size": args.vocab_size})
    gpt = Gpt.make(config)
    weights = jm.make_weights(jax.random.key(0), gpt.weight_params)
    prompt, key = jnp.array([1]), jax.random.key(1)

    def sample(cache: bool) -> Any:
        return generate(gpt, weights, prompt, args.tokens, key, top_k=1, cache=cache).block_until_ready()

    seconds, tokens = {}, {}
    for name, cache in (("uncached", False), ("cached", True)):
        tokens[name] = sample(cache).tolist()  # compiles
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            sample(cache)
            times.append(time.perf_counter() - started)
        seconds[name] = statistics.median(times)
        row = {"path": name, "n_ctx": args.n_ctx, "tokens": args.tokens, "median_s": round(seconds[name], 4)}
        print(json.dumps({**row, "tokens_per_s": round(args.tokens / seconds[name], 1)}), flush=True)
    same = tokens["cached"] == tokens["uncached"]
    speedup = seconds["uncached"] / seconds["cached"]
    print(json.dumps({"speedup": round(speedup, 2), "same_tokens": same, "backend": jax.default_backend()}))


if __name__ == "__main__":
    main()
