"""OneFormer's per-sample text list: one "a photo with a {class}" per ground-truth mask of the sampled task, in
class order, padded with "a {task} photo" to N_text = N − N_ctx texts (cut when there are more masks).

As in OneFormer's data mappers, the class template always says "a" ("a photo with a airplane"): the words are
tokens of a closed vocabulary, not English; only the padding text takes "an" ("an instance photo").
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from polymax.config.model import ModelConfig
from polymax.tasks import get_task


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def sample_texts(classes: Sequence[int], *, class_names: Sequence[str], task: str, num_texts: int) -> list[str]:
    """``num_texts`` texts for the masks of classes ``classes`` (already in the order the task gives them)."""
    texts = [f"a photo with a {class_names[c]}" for c in classes][:num_texts]
    return texts + [f"{article(task)} {task} photo"] * (num_texts - len(texts))


def task_texts(task: str, panoptic: Tensor, crowd: Tensor | None, config: ModelConfig, *,
               num_texts: int) -> list[str]:
    """The texts of one image (panoptic (H, W), crowd (H, W) bool or None) for ``task``: the task decides which
    masks its targets hold (:meth:`polymax.tasks.base.Task.mask_classes`)."""
    classes = get_task(task).mask_classes(panoptic, crowd, config)
    return sample_texts(classes, class_names=config.dataset.class_names, task=task, num_texts=num_texts)
