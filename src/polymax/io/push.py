"""``polymax.push_to_hub(model, repo_id)``: a model folder uploaded to the Hugging Face Hub (the ``hub`` extra).
Apart from :mod:`polymax.io.hub` so that reading folders (which resolves Hub names) never imports writing."""

from __future__ import annotations

import tempfile

from torch import nn

from polymax.config.model import ModelConfig
from polymax.errors import UserError
from polymax.io.hub import FOLDER_FILES, REPO_ID, _hub


def push_to_hub(model: nn.Module, repo_id: str, *, private: bool | None = None, revision: str | None = None,
                metrics: dict[str, float] | None = None, commit_message: str = "Upload polymax model",
                token: str | None = None) -> str:
    """Save ``model`` (config, weights and a model card with ``metrics``) and upload it to the Hub repository
    ``repo_id`` (created if absent). Returns the URL of the commit. Needs a login (``hf auth login``) or ``token``."""
    from polymax.io.model_card import write_model_card
    from polymax.io.pretrained import save_pretrained

    if not REPO_ID.match(repo_id):
        raise UserError(f"{repo_id!r} is not a Hugging Face Hub repo id; use owner/name")
    hub = _hub("to push to the Hugging Face Hub")
    api = hub.HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="polymax-push-") as folder:
        save_pretrained(model, folder)
        config: ModelConfig = model.config  # type: ignore[assignment]   # save_pretrained checked it
        write_model_card(folder, config, metrics=metrics, model_id=repo_id)
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=folder, revision=revision,
                                 commit_message=commit_message, allow_patterns=FOLDER_FILES)
    return str(getattr(info, "commit_url", info))
