"""Character-level text: a corpus available offline, its vocabulary, and a unigram baseline.

The default corpus is the Python standard library's `pydoc_data.topics.topics` (the help
pages behind `help("if")`, ...): English prose about Python, about 465k characters, under
the Python Software Foundation License, installed with every Python. Nothing is downloaded.
"""

import dataclasses
import functools
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

import jaxmake as jm
from jaxmake.data._batching import _held_out_count
from jaxmake.data._error import DataError


@dataclasses.dataclass(frozen=True)
class CharVocab:
    """A character vocabulary: character `chars[i]` has id `i`.

    Plain data, so it can be saved beside a checkpoint and read back without pickle:
    `vocab.to_json()` and `CharVocab.from_json(text)`, or `list(vocab.chars)` inside a
    larger JSON document.

    Attributes:
        chars: the characters, each a string of length 1, without repeats; a list given
            is stored as a tuple.

    Raises:
        ValueError: `chars` is empty, holds a string that is not one character, or repeats one.

    Example:
        >>> vocab = CharVocab.from_text("hello")
        >>> vocab.chars, vocab.size, vocab.encode("hole").tolist(), vocab.decode([1, 0])
        (('e', 'h', 'l', 'o'), 4, [1, 3, 2, 0], 'he')
    """

    chars: tuple[str, ...]

    def __post_init__(self) -> None:
        chars = tuple(self.chars)
        object.__setattr__(self, "chars", chars)
        if not chars:
            raise DataError("`CharVocab.chars` is empty; a vocabulary needs at least one character.")
        bad = [c for c in chars if not isinstance(c, str) or len(c) != 1]
        if bad:
            raise DataError(f"`CharVocab.chars` must hold single characters, got {bad[0]!r}.")
        if len(set(chars)) != len(chars):
            repeated = sorted({c for c in chars if chars.count(c) > 1})
            raise DataError(f"`CharVocab.chars` repeats the characters {repeated}.")

    @functools.cached_property
    def _ids(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> "CharVocab":
        """The vocabulary of the distinct characters of `text`, sorted by code point.

        Raises:
            ValueError: `text` is empty.
        """
        return cls(tuple(sorted(set(text))))

    @property
    def size(self) -> int:
        """The number of characters, i.e. the number of ids (the model's `vocab_size`)."""
        return len(self.chars)

    def encode(self, text: str) -> npt.NDArray[np.int32]:
        """The ids of the characters of `text`, as an int32 array of shape `[len(text)]`.

        Raises:
            ValueError: `text` holds characters outside the vocabulary; the message lists
                them and where the first one is.
        """
        unknown = sorted(set(text) - self._ids.keys())
        if unknown:
            position = min(text.index(c) for c in unknown)
            shown = ", ".join(repr(c) for c in unknown)
            raise DataError(
                f"`CharVocab.encode`: the character{'s' if len(unknown) > 1 else ''} {shown} "
                f"{'are' if len(unknown) > 1 else 'is'} not in the vocabulary of {self.size} characters "
                f"(first at position {position} of the text). The vocabulary holds the characters of "
                f"the corpus it was built from; remove or replace the others."
            )
        return np.fromiter((self._ids[c] for c in text), dtype=np.int32, count=len(text))

    @jm.checks_own_arguments
    def decode(self, ids: npt.NDArray[np.integer[Any]] | Sequence[int]) -> str:
        """The text of a sequence of ids, shape `[L]`.

        Raises:
            ValueError: `ids` is not one-dimensional, or holds an id outside `0 .. size - 1`.
        """
        array = np.asarray(ids)
        if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
            raise DataError(
                f"`ids` must be a 1-D sequence of integers, got shape {array.shape} and dtype {array.dtype}."
            )
        outside = np.flatnonzero((array < 0) | (array >= self.size))
        if outside.size:
            raise DataError(
                f"id {array[outside[0]]} at position {outside[0]} is outside the vocabulary: "
                f"ids run from 0 to {self.size - 1}."
            )
        return "".join(self.chars[i] for i in array.tolist())

    def to_json(self) -> str:
        """The vocabulary as a JSON document: `{"chars": [...]}`."""
        return json.dumps({"chars": list(self.chars)})

    @classmethod
    def from_json(cls, text: str) -> "CharVocab":
        """Read back what `to_json` wrote.

        Raises:
            ValueError: `text` is not JSON of the form `{"chars": [single characters]}`.
        """
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("chars"), list):
            raise DataError(f'a `CharVocab` JSON document is {{"chars": [...]}}, got {text[:80]!r}.')
        chars: list[Any] = data["chars"]
        return cls(tuple(chars))


jm.checks_own_arguments(CharVocab.__init__)  # `__post_init__` checks `chars` (a list is taken as a tuple)


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class TextSplit:
    """A character corpus as ids, split into a training and a validation part.

    Attributes:
        vocab: the vocabulary of the whole corpus (training and validation text).
        train: int32 ids of the first part of the corpus, shape `[L_train]`.
        valid: int32 ids of the rest, shape `[L_valid]`.
    """

    vocab: CharVocab
    train: npt.NDArray[np.int32]
    valid: npt.NDArray[np.int32]

    def __repr__(self) -> str:
        return (
            f"TextSplit(vocab=<{self.vocab.size} characters>, train={self.train.dtype}{list(self.train.shape)}, "
            f"valid={self.valid.dtype}{list(self.valid.shape)})"
        )


MAX_TEXT_BYTES = 1 << 28
"""The largest text file `load_text` reads by default: 256 MiB."""


def default_corpus() -> str:
    """The default corpus: the `pydoc_data.topics.topics` pages joined in sorted key order.

    Returns:
        About 465k characters (the exact text depends on the Python version).
    """
    from pydoc_data.topics import topics

    return "".join(topics[key] for key in sorted(topics))


def load_text(
    path: str | os.PathLike[str] | None = None, *, validation_fraction: float = 0.1, max_bytes: int = MAX_TEXT_BYTES
) -> TextSplit:
    """Load a character corpus, its vocabulary, and a contiguous train/validation split.

    The last `ceil(validation_fraction * L)` characters are the validation text and the
    rest the training text: contiguous, so that no training window overlaps a validation
    one. The vocabulary holds every distinct character of the whole corpus, sorted by code
    point, so both parts can be encoded; text outside it (a prompt, say) raises
    `ValueError` in `CharVocab.encode`.

    Args:
        path: a UTF-8 text file (line endings read as `\\n`); `None` for `default_corpus()`.
        validation_fraction: the share of characters held out, in (0, 1).
        max_bytes: refuse a file larger than this (the corpus is held in memory, 4 bytes
            per character once encoded).

    Returns:
        A `TextSplit` of int32 ids.

    Raises:
        DataError: the file is larger than `max_bytes`, is not UTF-8, is too short to
            split, or `validation_fraction` is outside (0, 1).
        OSError: the file cannot be read.

    Example:
        >>> text = load_text()
        >>> text.vocab.size > 90, text.train.dtype, len(text.valid) / (len(text.train) + len(text.valid))
        (True, dtype('int32'), 0.1...)
    """
    corpus = default_corpus() if path is None else _read_text(Path(path), max_bytes)
    n_valid = _held_out_count(len(corpus), validation_fraction, what="validation_fraction")
    vocab = CharVocab.from_text(corpus)
    ids = vocab.encode(corpus)
    return TextSplit(vocab, ids[:-n_valid], ids[-n_valid:])


def _read_text(path: Path, max_bytes: int) -> str:
    """The UTF-8 text of the file at `path` (line endings read as `\\n`), if it holds at most `max_bytes`."""
    with path.open("rb") as file:
        content = file.read(max_bytes + 1)
    if len(content) > max_bytes:
        raise DataError(f"`load_text`: {os.fspath(path)!r} holds more than `max_bytes`={max_bytes:,} bytes.")
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"`load_text`: {os.fspath(path)!r} is not UTF-8 text ({error}).") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def unigram_entropy(
    train_ids: npt.NDArray[np.integer[Any]], valid_ids: npt.NDArray[np.integer[Any]], vocab_size: int
) -> float:
    """The validation loss of the best model that ignores context: a baseline to beat.

    The cross-entropy, in nats per token, of `valid_ids` under the unigram distribution of
    `train_ids` with add-one (Laplace) smoothing,
    `p(c) = (count_train(c) + 1) / (L_train + vocab_size)`, so that a token never seen in
    training has a finite cost. A language model's validation loss (mean softmax
    cross-entropy, also in nats) should end well below it.

    Args:
        train_ids: int ids, shape `[L_train]`, each in `0 .. vocab_size - 1`.
        valid_ids: int ids, shape `[L_valid]` with `L_valid >= 1`, each in `0 .. vocab_size - 1`.
        vocab_size: the number of distinct ids, at least 1.

    Returns:
        `-mean(log p(valid_ids))`, a float in nats.

    Raises:
        ValueError: an id outside `0 .. vocab_size - 1`, no validation ids, or not 1-D integers.

    Example:
        >>> # p = (3/6, 2/6, 1/6); the validation text costs -(log(3/6) + log(1/6)) / 2 = log(12) / 2
        >>> math.isclose(unigram_entropy(np.array([0, 0, 1]), np.array([0, 2]), 3), math.log(12) / 2)
        True
    """
    if vocab_size < 1:
        raise DataError(f"`vocab_size` must be at least 1, got {vocab_size}.")
    for name, ids in (("train_ids", train_ids), ("valid_ids", valid_ids)):
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise DataError(f"`{name}` must be a 1-D integer array, got shape {ids.shape} and dtype {ids.dtype}.")
        outside = np.flatnonzero((ids < 0) | (ids >= vocab_size))
        if outside.size:
            raise DataError(
                f"`{name}` holds id {ids[outside[0]]} at position {outside[0]}, outside 0 .. {vocab_size - 1}."
            )
    if valid_ids.shape[0] == 0:
        raise DataError("`valid_ids` is empty; the cross-entropy of no text is undefined.")
    counts = np.bincount(train_ids, minlength=vocab_size) + 1
    log_p = np.log(counts) - math.log(train_ids.shape[0] + vocab_size)
    return float(-log_p[valid_ids].mean())
