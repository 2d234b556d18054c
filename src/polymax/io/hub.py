"""Model folders on the Hugging Face Hub, through ``huggingface_hub`` (the optional ``hub`` extra).

    polymax.load_model("owner/name")                      # a Hub repo id, as well as a local folder
    Predictor.from_pretrained("owner/name", revision="v1")   # any branch, tag or commit
    polymax.push_to_hub(model, "owner/name")              # config.json + model.safetensors + README.md card

Downloads go to the Hub cache (``HF_HUB_CACHE``, default ``~/.cache/huggingface/hub``) and only the folder's
own files are fetched. Offline (``HF_HUB_OFFLINE=1``) a repo id resolves to its cached snapshot, so a machine
without network runs a model it fetched before with the same command. A name that is an existing folder is
always the folder: a local path never goes to the network.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from polymax.errors import UserError

# What a model folder holds; nothing else in a repository is downloaded.
FOLDER_FILES = ["config.json", "model.safetensors", "README.md"]
# owner/name, as the Hub spells repository ids (letters, digits, -, _, .; no leading punctuation).
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


def looks_like_repo_id(name: str | os.PathLike) -> bool:
    """True for ``owner/name`` strings that are not an existing local path."""
    text = os.fspath(name)
    return bool(REPO_ID.match(text)) and not Path(text).exists() and not text.startswith(".")


def resolve_model_path(name: str | os.PathLike, *, revision: str | None = None) -> Path:
    """A local folder for ``name``: the folder itself, or the Hub snapshot of repo id ``name`` (downloaded, or
    read from the cache offline). A missing folder that is not a repo id is returned as is (its reader says why)."""
    if not looks_like_repo_id(name):
        return Path(name)
    repo_id = os.fspath(name)
    hub = _hub(f"{repo_id} is not a local folder; to load it as a Hugging Face Hub repo id")
    from huggingface_hub import errors

    try:
        return Path(hub.snapshot_download(repo_id, revision=revision, allow_patterns=FOLDER_FILES))
    except errors.RepositoryNotFoundError:
        raise UserError(f"{repo_id}: no such folder here and no such model on the Hugging Face Hub (or it is "
                        "private: log in with `hf auth login`)") from None
    except errors.RevisionNotFoundError:
        raise UserError(f"{repo_id} has no revision {revision!r} on the Hugging Face Hub") from None
    except errors.LocalEntryNotFoundError:
        raise UserError(f"{repo_id} is not in the Hugging Face Hub cache ({_cache()}) and the Hub cannot be "
                        "reached (offline?); download it once with network access, or pass a local folder") from None
    except errors.HfHubHTTPError as error:
        raise UserError(f"{repo_id}: the Hugging Face Hub answered {str(error).splitlines()[0]}") from None


def _hub(purpose: str):
    try:
        import huggingface_hub
    except ImportError:
        raise UserError(f"{purpose}, install the hub extra: pip install \"polymax[hub]\"") from None
    return huggingface_hub


def _cache() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)
