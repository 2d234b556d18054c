"""The text mapper against the reference's golden outputs (tests/fixtures/oneformer_hf): the original repository's
causal encoder (``text/causal/*``) and the Hugging Face port without the mask (``text/hf/*``);
max|Δ| ≤ 1e-5 · max|ref| per array (the fixture README §8)."""

from __future__ import annotations

import pytest
import torch
from deeplab2_fixture import assert_close_to_scale
from oneformer_fixture import HIDDEN, N_CTX, golden, manifest, text_mapper


@pytest.mark.parametrize(("causal", "variant"), [(True, "causal"), (False, "hf")])
def test_the_text_mapper_matches_the_reference(oneformer, causal, variant):
    mapper = text_mapper(oneformer, causal=causal)
    reference = golden(oneformer)
    ids = torch.from_numpy(reference["inputs/text_ids"])                          # (2, 8, 77)
    with torch.no_grad():
        encoded = mapper.encoder(ids)                                             # (2, 8, 64)
        projected = mapper.projector(encoded)
        queries = mapper(ids)
    assert queries.shape == (2, 8 + N_CTX, HIDDEN)
    assert_close_to_scale(encoded.reshape(16, HIDDEN).numpy(), reference[f"text/{variant}/encoder_out"],
                          "encoder_out", rel=1e-5)
    assert_close_to_scale(projected.reshape(16, HIDDEN).numpy(), reference[f"text/{variant}/projector_out"],
                          "projector_out", rel=1e-5)
    assert_close_to_scale(queries.numpy(), reference[f"text/{variant}/queries"], "queries", rel=1e-5)
    assert torch.equal(queries[1, 8:], mapper.context)                            # the context rows come last


def test_the_feature_is_taken_at_the_eot_position(oneformer):
    ids = torch.from_numpy(golden(oneformer)["inputs/text_ids"]).reshape(16, 77)
    assert ids.argmax(dim=-1).tolist() == manifest(oneformer)["checks"]["eot_positions"]
    mapper = text_mapper(oneformer, causal=True)
    changed = ids.clone()
    changed[1, 5:] = 7                                  # after row 1's EOT (position 3): the causal feature ignores it
    with torch.no_grad():
        assert torch.allclose(mapper.encoder(changed[1]), mapper.encoder(ids[1]), atol=1e-6)
    bidirectional = text_mapper(oneformer, causal=False)
    with torch.no_grad():
        assert not torch.allclose(bidirectional.encoder(changed[1]), bidirectional.encoder(ids[1]), atol=1e-3)


def test_the_causal_mask_is_the_only_difference(oneformer):
    reference = golden(oneformer)
    assert float(abs(reference["text/causal/queries"] - reference["text/hf/queries"]).max()) > 0.5
