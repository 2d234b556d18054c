"""The OneFormer golden outputs (tests/fixtures/oneformer_hf, see its README): weights regenerated from the
manifest's seeded recipe (sha256 checked), the stored arrays, and loaders that put the reference's weights into
our modules under their names (README §6 maps the Hugging Face names to the pieces)."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from deeplab2_fixture import array_for


def _folder(oneformer: Path) -> Path:
    return oneformer                                  # tests/fixtures/oneformer_hf (the ``oneformer`` fixture)


@functools.cache
def manifest(oneformer: Path) -> dict:
    return json.loads((_folder(oneformer) / "manifest.json").read_text())


@functools.cache
def reference_weights(oneformer: Path) -> dict[str, torch.Tensor]:
    """Hugging Face state-dict name → float32 tensor, every sha256 verified."""
    weights = {}
    for entry in manifest(oneformer)["variables"]:
        array = array_for(entry)
        if hashlib.sha256(np.ascontiguousarray(array, dtype="<f4").tobytes()).hexdigest() != entry["sha256"]:
            raise AssertionError(f"recipe mismatch for {entry['name']}")
        weights[entry["name"]] = torch.from_numpy(array)
    return weights


@functools.cache
def golden(oneformer: Path) -> dict[str, np.ndarray]:
    with np.load(_folder(oneformer) / "oneformer_hf.npz") as data:
        return {key: data[key] for key in data.files}


def load_renamed(module: torch.nn.Module, weights: dict[str, torch.Tensor], renames: dict[str, str]) -> None:
    """Copy ``weights[reference name]`` into ``module``'s parameter ``renames[reference prefix] + rest``; every
    parameter of ``module`` must be filled exactly once."""
    state = {}
    for name, value in weights.items():
        for prefix, ours in renames.items():
            if name.startswith(prefix):
                state[ours + name[len(prefix):]] = value
                break
    missing, unexpected = module.load_state_dict(state, strict=False)
    assert not missing and not unexpected, (missing, unexpected)


# --- our modules with the reference's weights (README §6: which reference module is which piece) ---------------

HIDDEN, N, HEADS, FFN = 64, 12, 8, 256             # the fixture's config (README §2)
TEXT_LAYERS, VOCAB, N_CTX = 2, 512, 4              # text width = HIDDEN, one head of width 64
TASKS = ("panoptic", "semantic", "instance")       # the row order of inputs/task_ids
DECODER = "model.transformer_module.decoder."
TEXT = "model.text_mapper."
TOKEN_RENAMES = {"model.task_encoder.task_mlp.layers.0.0.": "mlp.0.",
                 "model.task_encoder.task_mlp.layers.1.0.": "mlp.2.",
                 DECODER + "decoder_norm.": "norm."}


def _pick(weights: dict[str, torch.Tensor], renames: dict[str, str]) -> dict[str, torch.Tensor]:
    return {name: value for name, value in weights.items() if name.startswith(tuple(renames))}


def task_token_encoder(oneformer: Path):
    from polymax.model.cluster_decoder.task_queries import TaskTokenEncoder

    encoder = TaskTokenEncoder(hidden=HIDDEN).eval()
    load_renamed(encoder, _pick(reference_weights(oneformer), TOKEN_RENAMES), TOKEN_RENAMES)
    return encoder


def task_guided_queries(oneformer: Path, **options):
    from polymax.model.cluster_decoder.task_queries import TaskGuidedQueries

    renames = {old: f"task_encoder.{new}" for old, new in TOKEN_RENAMES.items()}
    renames[DECODER + "query_input_projection."] = "feature_projection."
    renames[DECODER + "query_transformer.decoder.norm."] = "norm."
    for i in range(2):
        layer = f"{DECODER}query_transformer.decoder.layers.{i}."
        renames[layer + "multihead_attn."] = f"layers.{i}.cross_attn."
        renames[layer] = f"layers.{i}."
    module = TaskGuidedQueries(num_queries=N, feature_channels=HIDDEN, hidden=HIDDEN, num_heads=HEADS, ffn=FFN,
                               **options).eval()
    weights = _pick(reference_weights(oneformer), renames)
    # The reference's table has N rows and uses the first N − 1 (the N-th query is the task token).
    weights["query_position"] = reference_weights(oneformer)["model.transformer_module.queries_embedder.weight"][:N - 1]
    load_renamed(module, weights, {**renames, "query_position": "query_position"})
    return module


def text_mapper(oneformer: Path, *, causal: bool):
    from polymax.text import TextMapper

    encoder = TEXT + "text_encoder."
    renames = {encoder + "token_embedding.": "encoder.token_embedding.",
               encoder + "positional_embedding": "encoder.positional_embedding",
               encoder + "ln_final.": "encoder.final_norm.",
               TEXT + "text_projector.layers.0.0.": "projector.0.",
               TEXT + "text_projector.layers.1.0.": "projector.2.",
               TEXT + "prompt_ctx.weight": "context"}
    for i in range(TEXT_LAYERS):
        layer, ours = f"{encoder}transformer.layers.{i}.", f"encoder.blocks.{i}."
        renames.update({layer + "layer_norm1.": ours + "norm1.", layer + "layer_norm2.": ours + "norm2.",
                        layer + "self_attn.": ours + "attn.", layer + "mlp.fc1.": ours + "mlp.0.",
                        layer + "mlp.fc2.": ours + "mlp.2."})
    mapper = TextMapper(vocab_size=VOCAB, hidden=HIDDEN, width=HIDDEN, num_heads=1, num_layers=TEXT_LAYERS,
                        num_context=N_CTX, causal=causal).eval()
    load_renamed(mapper, _pick(reference_weights(oneformer), renames), renames)
    return mapper


def parity_report(oneformer: Path) -> list[tuple[str, float, float]]:
    """(array, max|Δ|, max|Δ| / max|ref|) for every piece: the figures docs/oneformer.md quotes."""
    from polymax.losses.contrastive import QueryTextContrastiveLoss
    from polymax.model.cluster_decoder.task_queries import prompt_ids

    reference, rows = golden(oneformer), []

    def compare(name: str, ours: torch.Tensor) -> None:
        expected = reference[name].astype(np.float64)
        diff = float(np.abs(ours.detach().double().numpy().reshape(expected.shape) - expected).max())
        rows.append((name, diff, diff / max(float(np.abs(expected).max()), 1e-12)))

    with torch.no_grad():
        ids = torch.stack([prompt_ids(task) for task in TASKS])
        encoder = task_token_encoder(oneformer)
        compare("task/mlp_out", encoder.mlp(ids.float()))
        compare("task/token", encoder(ids))
        module, pixels = task_guided_queries(oneformer), torch.from_numpy(reference["inputs/mask_features"])
        for row, task in enumerate(TASKS):
            compare(f"query_init/{task}/contrastive_queries", module(pixels, ids[row].expand(2, -1)).queries)
        text_ids = torch.from_numpy(reference["inputs/text_ids"])
        for causal, variant in ((True, "causal"), (False, "hf")):
            mapper = text_mapper(oneformer, causal=causal)
            compare(f"text/{variant}/encoder_out", mapper.encoder(text_ids))
            compare(f"text/{variant}/queries", mapper(text_ids))
        loss = QueryTextContrastiveLoss()
        for batch in (4, 2, 1):
            compare(f"contrastive/loss_b{batch}",
                    loss(*(torch.from_numpy(reference[f"inputs/contrastive_{side}_queries_b4"])[:batch]
                           for side in ("object", "text"))))
        queries = torch.from_numpy(reference["query_init/panoptic/contrastive_queries"])
        compare("contrastive/loss_pipeline_b2", loss(queries, torch.from_numpy(reference["text/hf/queries"])))
        compare("contrastive/loss_pipeline_b2_causal",
                loss(queries, torch.from_numpy(reference["text/causal/queries"])))
    return rows


if __name__ == "__main__":                          # PYTHONPATH=src:tests python tests/oneformer_fixture.py
    import warnings

    from conftest import ONEFORMER_DIR

    warnings.simplefilter("ignore")
    for name, diff, ratio in parity_report(ONEFORMER_DIR):
        print(f"{name:45s} max|Δ| {diff:.3g}   / max|ref| {ratio:.3g}")
