"""OneFormer's text side: class names → text queries (B, N, E) for the query–text contrastive loss.

    targets of the sampled task → texts ("a photo with a {class}" …, padded with "a {task} photo")   prompts.py
      → closed-vocabulary ids (…, 77)                                                                 tokenizer.py
      → CLIP-style causal text encoder → projector, + N_ctx learned context → Q_text                  mapper.py

Why a package of its own, beside the model rather than in it: the text mapper is training-only machinery. It is
dropped at inference, so it is neither saved with the model's weights for prediction nor exported, and
``polymax.model`` (what runs at inference) must not depend on it. It is not a loss either: it has weights of its
own and a tokenizer built from the data set's class names. The loss that compares its output with the model's
task-guided queries lives in :mod:`polymax.losses.contrastive`.
"""

from polymax.text.mapper import TextEncoder, TextMapper
from polymax.text.prompts import sample_texts, task_texts
from polymax.text.tokenizer import ClassVocabularyTokenizer

__all__ = ["ClassVocabularyTokenizer", "TextEncoder", "TextMapper", "sample_texts", "task_texts"]
