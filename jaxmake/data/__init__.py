"""Bundled real data sets and plain NumPy batching; nothing is downloaded.

* `load_digits(test_fraction, seed)`: scikit-learn's 1,797 handwritten digits as
  `[8, 8, 1]` float32 images in [0, 1] with int32 labels, in a seeded stratified split;
* `load_text(path)`: a character corpus (by default the standard library's
  `pydoc_data.topics`) as int32 ids, its `CharVocab`, and a train/validation split;
  `unigram_entropy` gives the context-free baseline loss to beat;
* `batches`, `random_windows`, `contiguous_windows`, `stratified_split`, `steps_per_epoch`:
  deterministic NumPy plumbing driven by a `np.random.Generator`.

Every error they raise on purpose is a `DataError` (both a `ValueError` and a
`jaxmake.JaxMakeError`), whose message gives the numbers.
"""

from jaxmake.data._batching import batches as batches
from jaxmake.data._batching import contiguous_windows as contiguous_windows
from jaxmake.data._batching import random_windows as random_windows
from jaxmake.data._batching import steps_per_epoch as steps_per_epoch
from jaxmake.data._batching import stratified_split as stratified_split
from jaxmake.data._digits import ArraySplit as ArraySplit
from jaxmake.data._digits import load_digits as load_digits
from jaxmake.data._error import DataError as DataError
from jaxmake.data._text import CharVocab as CharVocab
from jaxmake.data._text import TextSplit as TextSplit
from jaxmake.data._text import default_corpus as default_corpus
from jaxmake.data._text import load_text as load_text
from jaxmake.data._text import unigram_entropy as unigram_entropy
