"""Weight-path patterns: selecting weights by their dotted paths, for freezing and surgery.

A weight's path is the dotted string of the keys leading to it, `encoder.tfe_layer_0.mha.kqv.w`.
A pattern is an `fnmatch` pattern (`*` any characters, dots included; `?` one character;
`[seq]` one of `seq`) matched against the whole path. It selects a weight if it matches
the weight's path or the path of any group above it, so `embedding`, `embedding.*` and
`embed*` all select `embedding.dict`. A pattern that selects nothing is a mistake (a typo,
or a model with other names) and raises `WeightsError` listing the nearest paths.
"""

import difflib
from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import Any

from jaxmake._errors import ArgumentError, WeightsError, checks_own_arguments, value_repr

_NEAREST = 5
"""How many of the nearest paths a `WeightsError` lists."""

PATTERN_RULE = (
    "A pattern is matched with `fnmatch` (`*`: any characters, dots included) against each weight's dotted "
    "path and the paths of the groups above it, so `embedding` and `embedding.*` both select `embedding.dict`."
)
"""How patterns match, as the errors about patterns say it."""


def flat_weights(weights: Mapping[str, Any]) -> dict[str, Any]:
    """The leaves of a weights tree keyed by their dotted paths; empty sub-dicts vanish.

    A tree that is already flat is returned as it is, so `flat_weights(flat_weights(w))`
    equals `flat_weights(w)`.

    Args:
        weights: a nested dict of arrays (or of anything else, such as
            `jax.ShapeDtypeStruct` or `WeightParams`), as `jm.make_weights` builds it.

    Returns:
        `{"encoder.tfe_layer_0.mha.kqv.w": array, ...}`, in the tree's order.

    Raises:
        ArgumentError: a key is not a non-empty string, or two paths give the same
            dotted key (`{"a.b": x, "a": {"b": y}}`).

    Example:
        >>> flat_weights({"encoder": {"norm": {"a": 1, "b": 2}}, "dropout": {}, "lm_head": {"w": 3}})
        {'encoder.norm.a': 1, 'encoder.norm.b': 2, 'lm_head.w': 3}
    """
    flat: dict[str, Any] = {}

    def walk(tree: Mapping[str, Any], prefix: str) -> None:
        for key, value in tree.items():
            if not isinstance(key, str) or not key:
                raise ArgumentError(f"weights are keyed by non-empty strings, got the key {value_repr(key)}")
            path = f"{prefix}{key}"
            if isinstance(value, Mapping):
                walk(value, f"{path}.")
            elif path in flat:
                raise ArgumentError(f"two weights have the dotted path `{path}`: rename one of them")
            else:
                flat[path] = value

    walk(weights, "")
    return flat


def weight_paths(tree: Mapping[str, Any]) -> list[str]:
    """The dotted path of every weight of a spec or weights tree, in the tree's order (`flat_weights`' keys).

    A weight is anything that is not a mapping (a `WeightParams`, an array); empty groups
    (`"dropout": {}`) hold none.

    Example:
        >>> weight_paths({"embedding": {"dict": 0}, "dropout": {}, "lm_head": {"w": 0, "b": 0}})
        ['embedding.dict', 'lm_head.w', 'lm_head.b']
    """
    return list(flat_weights(tree))


def path_matches(pattern: str, path: str) -> bool:
    """Whether `pattern` matches the dotted `path` or the path of a group above it.

    Example:
        >>> [path_matches(p, "encoder.tfe_layer_0.mha.kqv.w") for p in ("encoder", "*.kqv", "*.w", "*mlp*", "enc")]
        [True, True, True, False, False]
    """
    names = path.split(".")
    return any(fnmatchcase(".".join(names[:depth]), pattern) for depth in range(1, len(names) + 1))


@checks_own_arguments
def match_paths(tree: Mapping[str, Any], pattern: str) -> list[str]:
    """The paths of the weights of `tree` that `pattern` selects (see `path_matches`), in the tree's order.

    Args:
        tree: a spec tree (`component.weight_params`) or a weights tree.
        pattern: an `fnmatch` pattern of dotted paths.

    Returns:
        The selected paths; never empty.

    Raises:
        WeightsError: `pattern` selects no weight; the message lists the nearest paths.
        ArgumentError: `pattern` is not a non-empty string.

    Example:
        >>> spec = {"embedding": {"dict": jm.WeightParams((5, 4))}, "lm_head": {"w": jm.WeightParams((4, 5))}}
        >>> match_paths(spec, "embedding")
        ['embedding.dict']
        >>> match_paths(spec, "embeding.*")
        Traceback (most recent call last):
        ...
        jaxmake._errors.WeightsError: the weight-path pattern `embeding.*` selects no weight; the nearest paths are
        `embedding`, `embedding.dict` (of 2 weights). A pattern is matched with `fnmatch` ...
    """
    if not isinstance(pattern, str) or not pattern:
        raise ArgumentError(f"a weight-path pattern is a non-empty string, got {value_repr(pattern)}")
    paths = weight_paths(tree)
    matched = [path for path in paths if path_matches(pattern, path)]
    if not matched:
        raise WeightsError(_no_match_message(pattern, paths))
    return matched


def _no_match_message(pattern: str, paths: list[str]) -> str:
    groups = {".".join(path.split(".")[:depth]) for path in paths for depth in range(1, path.count(".") + 1)}
    candidates = sorted(groups | set(paths))
    if not candidates:
        return f"the weight-path pattern `{pattern}` selects no weight: the tree holds none"
    bare = pattern.replace("*", "").replace("?", "").strip(".")
    nearest = difflib.get_close_matches(bare, candidates, n=_NEAREST, cutoff=0.5) or difflib.get_close_matches(
        bare, candidates, n=_NEAREST, cutoff=0.0
    )
    shown = ", ".join(f"`{path}`" for path in nearest)  # the nearest first
    deeper = any(fnmatchcase(path.rsplit(".", 1)[-1], pattern) for path in candidates)
    hint = f"; did you mean `*.{pattern}`? A pattern matches whole paths, from the root" if deeper else ""
    return (
        f"the weight-path pattern `{pattern}` selects no weight; the nearest paths are {shown} "
        f"(of {len(paths)} weights){hint}. {PATTERN_RULE}"
    )
