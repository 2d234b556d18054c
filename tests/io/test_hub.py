"""Hub repo ids as model names, offline against a hand-made Hugging Face cache; model cards in saved folders."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import polymax
from polymax.errors import UserError
from polymax.io.hub import looks_like_repo_id, resolve_model_path
from polymax.io.model_card import CARD_FILE, MARKER, model_card
from polymax.presets import PRESETS

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return polymax.build_model("polymax_tiny_synth_depth").eval()


def _cache_with(tmp_path, model, repo_id="someone/tiny-depth"):
    """The layout huggingface_hub keeps: models--owner--name/{refs/main, snapshots/<commit>/files}."""
    owner, name = repo_id.split("/")
    storage = tmp_path / "hub" / f"models--{owner}--{name}"
    polymax.save_pretrained(model, storage / "snapshots" / COMMIT)
    (storage / "refs").mkdir()
    (storage / "refs" / "main").write_text(COMMIT)
    return tmp_path / "hub"


@pytest.fixture
def offline_cache(monkeypatch, tmp_path):
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path


def test_repo_ids_and_paths_are_told_apart(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert looks_like_repo_id("google/kmax-r50") and not looks_like_repo_id("kmax-r50")
    assert not looks_like_repo_id("./a/b") and not looks_like_repo_id("a/b/c")
    (tmp_path / "runs" / "last").mkdir(parents=True)
    assert not looks_like_repo_id("runs/last")                   # an existing folder is always the folder
    assert resolve_model_path("runs/last") == tmp_path.joinpath("runs", "last").relative_to(tmp_path)


def test_load_model_from_cached_repo_offline(offline_cache, tiny_model):
    _cache_with(offline_cache, tiny_model)
    loaded = polymax.load_model("someone/tiny-depth")
    images = torch.rand(1, 3, 65, 65) * 255
    with torch.no_grad():
        assert torch.equal(loaded(images).run.final.probabilities, tiny_model(images).run.final.probabilities)
    from polymax.inference.predictor import Predictor
    result = Predictor.from_pretrained("someone/tiny-depth").predict(torch.rand(3, 40, 50).mul(255).numpy()
                                                                     .transpose(1, 2, 0).astype("uint8"))
    assert result.depth.shape == (40, 50)


def test_uncached_repo_offline_is_one_line(offline_cache):
    with pytest.raises(UserError, match="not in the Hugging Face Hub cache .*offline"):
        polymax.load_model("someone/never-downloaded")


def test_predict_cli_takes_a_repo_id(offline_cache, tiny_model, tmp_path):
    cache = _cache_with(offline_cache, tiny_model)
    from PIL import Image
    Image.new("RGB", (48, 32), (120, 80, 40)).save(tmp_path / "room.png")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache),
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}     # this polymax, not an installed one
    done = subprocess.run([sys.executable, "-m", "polymax", "predict", str(tmp_path / "room.png"), "--model",
                           "someone/tiny-depth", "--out", str(tmp_path / "out"), "--device", "cpu"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "room_depth.png").is_file()


def test_saved_folder_has_a_model_card(tmp_path, tiny_model):
    folder = polymax.save_pretrained(tiny_model, tmp_path / "m", metrics={"abs_rel": 0.1734})
    card = (folder / CARD_FILE).read_text()
    assert card.startswith("---\nlibrary_name: polymax\npipeline_tag: depth-estimation")
    assert MARKER in card and "`polymax_tiny_synth_depth`" in card and "| abs_rel | 0.1734 |" in card
    assert "polymax predict photo.jpg --model DIR" in card
    (folder / CARD_FILE).write_text("# my own notes\n")              # the user's card survives a new save
    polymax.save_pretrained(tiny_model, folder)
    assert (folder / CARD_FILE).read_text() == "# my own notes\n"


def test_card_lists_classes_and_the_repo_id():
    config = polymax.build_model("kmax_tiny_test").config
    card = model_card(config, model_id="owner/kmax-tiny")
    assert f"| classes ({config.dataset.num_classes}) | {config.dataset.class_names[0]}" in card
    assert "--model owner/kmax-tiny" in card and 'Predictor.from_pretrained("owner/kmax-tiny")' in card
    assert "Not recorded" in card


def test_push_to_hub_uploads_the_folder(monkeypatch, tiny_model):
    hub = pytest.importorskip("huggingface_hub")
    calls = {}

    class FakeApi:                       # no network: record what would be sent
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, private=None, exist_ok=False):
            calls["repo"] = (repo_id, private, exist_ok)

        def upload_folder(self, *, repo_id, folder_path, revision, commit_message, allow_patterns):
            from pathlib import Path
            calls["files"] = sorted(p.name for p in Path(folder_path).iterdir())
            calls["card"] = (Path(folder_path) / "README.md").read_text()
            return "https://huggingface.co/owner/tiny/commit/abc"

    monkeypatch.setattr(hub, "HfApi", FakeApi)
    url = polymax.push_to_hub(tiny_model, "owner/tiny", private=True, metrics={"rms": 0.75})
    assert url.endswith("/commit/abc") and calls["repo"] == ("owner/tiny", True, True)
    assert calls["files"] == ["README.md", "config.json", "model.safetensors"]
    assert "--model owner/tiny" in calls["card"] and "| rms | 0.75 |" in calls["card"]
    with pytest.raises(UserError, match="not a Hugging Face Hub repo id"):
        polymax.push_to_hub(tiny_model, "no slash")


@pytest.mark.parametrize("preset, paper", [("oneformer_kmax_tiny_synth", "OneFormer"),
                                           ("ait_tiny_synth_depth", "All in Tokens"),
                                           ("polymax_tiny_synth_depth", "PolyMaX")])
def test_card_names_the_method_of_the_preset(preset, paper):
    assert paper in model_card(PRESETS[preset]())


def test_a_tokenizer_folder_gets_its_own_card(tmp_path):
    tokenizer = polymax.build_model("vqvae_tiny_synth_depth")
    polymax.save_pretrained(tokenizer, tmp_path / "tok")
    card = (tmp_path / "tok" / "README.md").read_text()
    assert "VQ-VAE tokenizer of depth maps" in card and "vqvae_tiny_synth_depth" in card
