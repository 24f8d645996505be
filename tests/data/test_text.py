"""Character corpora: the vocabulary, the default and file corpora, the unigram baseline."""

import math
from pathlib import Path

import numpy as np
import pytest

import jaxmake as jm
from jaxmake.data import CharVocab, DataError, TextSplit, default_corpus, load_text, unigram_entropy


@pytest.fixture(scope="module")
def text() -> TextSplit:
    return load_text()


def test_default_corpus_split_and_vocab(text: TextSplit) -> None:
    corpus = default_corpus()
    assert len(corpus) > 300_000
    assert 80 <= text.vocab.size <= 130
    assert text.train.dtype == np.int32 and text.valid.dtype == np.int32
    assert len(text.valid) == math.ceil(0.1 * len(corpus))
    assert len(text.train) + len(text.valid) == len(corpus)
    # Contiguous: the training text is the start of the corpus, the validation text its end.
    assert text.vocab.decode(text.train[:1000]) == corpus[:1000]
    assert text.vocab.decode(text.valid) == corpus[len(text.train) :]
    assert text.vocab.chars == tuple(sorted(set(corpus)))


def test_default_corpus_is_deterministic(text: TextSplit) -> None:
    again = load_text(validation_fraction=0.25)
    assert again.vocab == text.vocab
    np.testing.assert_array_equal(np.concatenate([again.train, again.valid]), np.concatenate([text.train, text.valid]))
    assert len(again.valid) == math.ceil(0.25 * (len(text.train) + len(text.valid)))


def test_file_corpus(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text("abba\r\ncab\n" * 5, encoding="utf-8")
    text = load_text(path, validation_fraction=0.2)
    assert text.vocab.chars == ("\n", "a", "b", "c")
    # "\r\n" is read as "\n": 5 lines of 9 characters, the last 9 held out.
    assert (len(text.train), len(text.valid)) == (36, 9)
    assert text.vocab.decode(text.valid) == "abba\ncab\n"
    assert repr(text) == "TextSplit(vocab=<4 characters>, train=int32[36], valid=int32[9])"
    assert load_text(str(path), validation_fraction=0.2).vocab == text.vocab


def test_file_errors(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt' is not UTF-8 text"):
        load_text(path)
    path.write_text("x", encoding="utf-8")
    with pytest.raises(ValueError, match=r"`validation_fraction`=0.1 of 1 examples holds out 1, leaving one side"):
        load_text(path)
    with pytest.raises(FileNotFoundError):
        load_text(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match=r"`validation_fraction` must be in \(0, 1\), got 1.5"):
        load_text(validation_fraction=1.5)


def test_encode_decode_round_trip(text: TextSplit) -> None:
    sample = "def f(x):\n    return {'a': x ** 2}  # “quoted” — ok…"
    ids = text.vocab.encode(sample)
    assert ids.dtype == np.int32 and ids.shape == (len(sample),)
    assert text.vocab.decode(ids) == sample
    assert text.vocab.decode(ids.tolist()) == sample
    assert text.vocab.decode([]) == "" and text.vocab.encode("").shape == (0,)


def test_unknown_characters_are_named(text: TextSplit) -> None:
    expected = r"the character '€' is not in the vocabulary of \d+ characters \(first at position 4 of the text\)"
    with pytest.raises(ValueError, match=expected):
        text.vocab.encode("cost€")
    with pytest.raises(ValueError, match=r"the characters '€', '🙂' are not in the vocabulary .*at position 1 "):
        text.vocab.encode("a🙂€")


def test_decode_errors() -> None:
    vocab = CharVocab(("a", "b"))
    with pytest.raises(ValueError, match=r"id 2 at position 1 is outside the vocabulary: ids run from 0 to 1"):
        vocab.decode([0, 2])
    with pytest.raises(ValueError, match=r"id -1 at position 0"):
        vocab.decode(np.array([-1]))
    with pytest.raises(ValueError, match=r"1-D sequence of integers, got shape \(1, 2\)"):
        vocab.decode(np.zeros((1, 2), np.int32))
    with pytest.raises(ValueError, match=r"dtype float64"):
        vocab.decode(np.array([0.5]))


def test_vocab_validation_and_json(text: TextSplit) -> None:
    restored = CharVocab.from_json(text.vocab.to_json())
    assert restored == text.vocab and hash(restored) == hash(text.vocab)
    assert CharVocab(["b", "a"]).chars == ("b", "a")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="is empty"):
        CharVocab(())
    with pytest.raises(ValueError, match=r"must hold single characters, got 'ab'"):
        CharVocab(("a", "ab"))
    with pytest.raises(ValueError, match=r"repeats the characters \['a'\]"):
        CharVocab(("a", "b", "a"))
    with pytest.raises(ValueError, match=r'a `CharVocab` JSON document is \{"chars": \[...\]\}, got'):
        CharVocab.from_json('["a", "b"]')


def test_unigram_entropy_by_hand() -> None:
    # Counts (2, 1, 0) + 1 over 3 + 3: p = (1/2, 1/3, 1/6).
    got = unigram_entropy(np.array([0, 0, 1]), np.array([0, 1, 2, 2]), 3)
    assert got == pytest.approx(-(math.log(1 / 2) + math.log(1 / 3) + 2 * math.log(1 / 6)) / 4)
    # A uniform training text gives log(vocab_size) on any validation text.
    assert unigram_entropy(np.arange(5), np.array([4, 4, 0]), 5) == pytest.approx(math.log(5))


def test_unigram_entropy_of_the_default_corpus(text: TextSplit) -> None:
    baseline = unigram_entropy(text.train, text.valid, text.vocab.size)
    # English text: about 3 nats per character, well under the uniform log(vocab_size).
    assert 2.5 < baseline < 3.5 < math.log(text.vocab.size)


def test_unigram_entropy_errors() -> None:
    with pytest.raises(ValueError, match=r"`valid_ids` holds id 3 at position 1, outside 0 .. 2"):
        unigram_entropy(np.array([0]), np.array([0, 3]), 3)
    with pytest.raises(ValueError, match=r"`train_ids` must be a 1-D integer array, got shape \(1, 1\)"):
        unigram_entropy(np.array([[0]]), np.array([0]), 3)
    with pytest.raises(ValueError, match="`valid_ids` is empty"):
        unigram_entropy(np.array([0]), np.array([], np.int32), 3)
    with pytest.raises(ValueError, match="`vocab_size` must be at least 1, got 0"):
        unigram_entropy(np.array([0]), np.array([0]), 0)


def test_file_errors_are_data_errors_with_the_numbers(tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    big.write_text("ab\r\ncd\n" * 100)
    with pytest.raises(DataError, match=r"big.txt' holds more than `max_bytes`=10 bytes"):
        load_text(big, max_bytes=10)
    assert "\r" not in load_text(big).vocab.chars  # line endings read as "\n", as text mode would
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(DataError):
        load_text(empty)
    assert issubclass(DataError, ValueError) and issubclass(DataError, jm.JaxMakeError)
