"""A closed-vocabulary tokenizer built from the data set's class names (no download, no BPE).

OneFormer trains its text encoder from scratch, so CLIP's BPE brings nothing the data set's own words do not: the
vocabulary is every word of the prompt templates, the task names and the class names. Ids: 0 = padding,
1 = unknown word, then the words in sorted order, then [SOT] and [EOT] — EOT is the largest id, because the
encoder pools the feature at ``argmax(ids)``. A text becomes [SOT] words… [EOT] 0…, 77 ids (long texts are cut
and keep their EOT).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

CONTEXT_LENGTH = 77
TEMPLATE_WORDS = ("a", "an", "photo", "with")
PAD, UNKNOWN = 0, 1


def words(text: str) -> list[str]:
    """Lower-case words of ``text`` (letters and digits; "traffic-light" → ["traffic", "light"])."""
    return re.findall(r"[a-z0-9]+", text.lower())


class ClassVocabularyTokenizer:
    """``tokenizer(texts) -> (len(texts), 77)`` int64 ids over the words of ``class_names`` and ``task_names``."""

    def __init__(self, *, class_names: Sequence[str], task_names: Iterable[str] = ("panoptic", "semantic", "instance"),
                 context_length: int = CONTEXT_LENGTH) -> None:
        vocabulary = set(TEMPLATE_WORDS)
        for text in (*class_names, *task_names):
            vocabulary.update(words(text))
        self.ids = {word: index + 2 for index, word in enumerate(sorted(vocabulary))}
        self.sot = len(self.ids) + 2
        self.eot = self.sot + 1
        self.context_length = context_length

    @property
    def vocab_size(self) -> int:
        """The number of ids (the text encoder's embedding rows): padding, unknown, words, SOT, EOT."""
        return self.eot + 1

    def encode(self, text: str) -> list[int]:
        body = [self.ids.get(word, UNKNOWN) for word in words(text)][:self.context_length - 2]
        return [self.sot, *body, self.eot]

    def __call__(self, texts: Sequence[str]) -> Tensor:
        ids = torch.full((len(texts), self.context_length), PAD, dtype=torch.int64)
        for row, text in enumerate(texts):
            encoded = self.encode(text)
            ids[row, :len(encoded)] = torch.tensor(encoded)
        return ids
