"""ERC corpora as one `Dialogue` type: loaders, label vocabularies and statistics.

    from selfemo.data import load_dialogues
    for dialogue in load_dialogues("meld", "../shared/erc/meld", splits=["test"]):
        ...

Formats: see `FORMATS` and docs/data-formats.md.
"""
from selfemo.data.errors import DataError, LoadReport
from selfemo.data.loaders import FORMATS, load_dialogues
from selfemo.data.model import SPLITS, Dialogue, Utterance, canonical_split
from selfemo.data.stats import compute_stats, format_table
from selfemo.data.vocab import BUILTIN_VOCABS, LabelVocab, get_vocab, vocab_from_labels

__all__ = [
    "BUILTIN_VOCABS",
    "FORMATS",
    "SPLITS",
    "DataError",
    "Dialogue",
    "LabelVocab",
    "LoadReport",
    "Utterance",
    "canonical_split",
    "compute_stats",
    "format_table",
    "get_vocab",
    "load_dialogues",
    "vocab_from_labels",
]
