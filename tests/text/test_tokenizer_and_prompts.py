"""The closed-vocabulary tokenizer and the per-sample texts of a task, on a hand-made panoptic map."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from polymax.config.model import DatasetInfo, ModelConfig
from polymax.text import ClassVocabularyTokenizer, TextMapper, sample_texts, task_texts

NAMES = ("sky", "traffic light", "person", "road", "airplane")
THINGS = (1, 2, 4)
DIVISOR, IGNORE = 1000, 255
CONFIG = replace(ModelConfig(), dataset=DatasetInfo(name="toy", class_names=NAMES, thing_classes=THINGS,
                                                    ignore_label=IGNORE, label_divisor=DIVISOR))


def _panoptic() -> tuple[torch.Tensor, torch.Tensor]:
    """6×6: road (stuff) everywhere, sky in the top row, persons 2·1000+1 and 2·1000+2, a traffic light, an
    airplane that is crowd, and void."""
    panoptic = torch.full((6, 6), 3 * DIVISOR)
    panoptic[0] = 0 * DIVISOR
    panoptic[2, :2] = 2 * DIVISOR + 1
    panoptic[2, 3:] = 2 * DIVISOR + 2
    panoptic[3, 0] = 1 * DIVISOR + 5
    panoptic[4, :3] = 4 * DIVISOR + 1
    panoptic[5, 5] = IGNORE * DIVISOR
    crowd = torch.zeros(6, 6, dtype=torch.bool)
    crowd[4, :3] = True
    return panoptic, crowd


def test_the_vocabulary_is_closed_and_eot_is_the_largest_id():
    tokenizer = ClassVocabularyTokenizer(class_names=NAMES)
    ids = tokenizer(["a photo with a traffic light", "an instance photo", "a photo with a unicorn"])
    assert ids.shape == (3, 77) and ids.dtype == torch.int64
    assert tokenizer.eot == tokenizer.vocab_size - 1 == int(ids.max())
    assert (ids[:, 0] == tokenizer.sot).all()
    assert ids.argmax(dim=-1).tolist() == [7, 4, 6]                     # EOT right after the words
    assert ids[2, 5] == 1 and (ids[0, 1:7] > 1).all()                    # "unicorn" is unknown, the rest known
    assert ids[0, 6] != ids[0, 5]                                        # "traffic" and "light" are two words
    long = tokenizer(["sky " * 100])
    assert long[0, 76] == tokenizer.eot and (long[0] > 0).all()          # cut, and still ends with EOT


def test_each_task_writes_its_own_texts():
    panoptic, crowd = _panoptic()
    texts = {task: task_texts(task, panoptic, crowd, CONFIG, num_texts=6) for task in ("panoptic", "semantic",
                                                                                       "instance")}
    # crowd airplane and void skipped; one text per mask, in class order; padded with the task's photo text
    assert texts["panoptic"] == ["a photo with a sky", "a photo with a traffic light", "a photo with a person",
                                 "a photo with a person", "a photo with a road", "a panoptic photo"]
    assert texts["semantic"] == ["a photo with a sky", "a photo with a traffic light", "a photo with a person",
                                 "a photo with a road", "a semantic photo", "a semantic photo"]
    assert texts["instance"] == ["a photo with a traffic light", "a photo with a person", "a photo with a person",
                                 "an instance photo", "an instance photo", "an instance photo"]
    without_crowd = task_texts("instance", panoptic, None, CONFIG, num_texts=6)
    assert "a photo with a airplane" in without_crowd


def test_texts_are_cut_to_the_number_of_text_queries():
    assert sample_texts([0, 1, 2], class_names=NAMES, task="semantic", num_texts=2) == [
        "a photo with a sky", "a photo with a traffic light"]


def test_a_task_without_class_masks_has_no_texts():
    panoptic, crowd = _panoptic()
    with pytest.raises(NotImplementedError, match="depth"):
        task_texts("depth", panoptic, crowd, CONFIG, num_texts=4)


def test_texts_become_text_queries_with_gradients():
    tokenizer = ClassVocabularyTokenizer(class_names=NAMES)
    panoptic, crowd = _panoptic()
    ids = torch.stack([tokenizer(task_texts(task, panoptic, crowd, CONFIG, num_texts=6))
                       for task in ("panoptic", "instance")])           # (B=2, T=6, 77)
    mapper = TextMapper(vocab_size=tokenizer.vocab_size, hidden=32, width=32, num_heads=2, num_layers=2,
                        num_context=2)
    queries = mapper(ids)
    assert queries.shape == (2, 8, 32)
    queries.square().mean().backward()
    assert all(p.grad is not None for p in mapper.parameters())
