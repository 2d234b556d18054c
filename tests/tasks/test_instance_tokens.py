"""The instance_tokens task beyond the contract: the soft-decode mask loss alone trains the token head, the decoder
pastes crops into boxes and paints them by score, the tokenizer travels inside the model folder, and
train-tokenizer → train → eval → predict runs end to end."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from polymax import build_model, load_model, save_pretrained
from polymax.build import build_criterion
from polymax.cli import main
from polymax.config.train import TrainConfig
from polymax.data import build_dataset
from polymax.data.collate import collate
from polymax.data.synthetic import SYNTH_INFO
from polymax.errors import UserError
from polymax.geometry import Geometry
from polymax.model.heads.instance_tokens import InstanceTokensOutput
from polymax.tasks import TASKS

PRESET = "ait_tiny_synth_instance"
NAME = "instance_tokens"
RECIPE = Path(__file__).resolve().parents[2] / "configs" / "ait_tiny_synth_instance.yaml"


def batch(count: int = 2):
    samples = list(build_dataset("synth", split="val", size=(65, 65), num_samples=count, seed=0))
    data = collate(samples, ignore_label=SYNTH_INFO.ignore_label, label_divisor=SYNTH_INFO.label_divisor)
    return data.images, data.targets


def only(**weights) -> TrainConfig:
    train = TrainConfig()
    zero = replace(train.loss, class_weight=0.0, dice_weight=0.0, mask_id_weight=0.0, inst_disc_weight=0.0,
                   semantic_weight=0.0, token_box_weight=0.0, token_ce_weight=0.0, token_mask_weight=0.0)
    return replace(train, loss=replace(zero, **weights))


def test_the_mask_dice_alone_trains_the_final_token_head_through_the_decoder():
    torch.manual_seed(0)
    model = build_model(PRESET)
    images, targets = batch()
    criterion = build_criterion(model.config, None, only(token_mask_weight=1.0))
    terms = criterion(model(images)[NAME], targets)
    assert list(terms) == ["token_mask_dice"] and float(terms.total.detach()) > 0
    terms.total.backward()
    head = model.heads[NAME]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.tokens[-1].parameters())
    assert all(p.grad is None for p in head.tokens[0].parameters())     # auxiliary predictions are not decoded
    assert all(p.grad is None for p in head.boxes[-1].parameters())
    assert not list(head.tokenizer.parameters())                         # frozen: buffers only
    # …and on into the kMaX decoder (whose residual branches start at zero, so the trunk below waits a step)
    assert model.kmax_decoder.cluster_centres.grad.abs().sum() > 0


def test_box_and_token_terms_name_every_prediction():
    model = build_model(PRESET)
    images, targets = batch()
    terms = build_criterion(model.config, None, only(token_box_weight=5.0, token_ce_weight=1.0))(
        model(images)[NAME], targets)
    layers = sum(model.config.kmax_decoder.num_layers)
    assert set(terms) == {"box_l1", "token_ce", *(f"aux_{i}{t}" for i in range(layers) for t in ("box_l1",
                                                                                                  "token_ce"))}


def output(boxes, crops, classes) -> InstanceTokensOutput:
    """One image, K = len(boxes) clusters with one-hot class logits (void = C)."""
    k = len(boxes)
    logits = torch.full((1, k, SYNTH_INFO.num_classes + 1), -10.0)
    for slot, (category, margin) in enumerate(classes):
        logits[0, slot, category] = margin
    return InstanceTokensOutput(mask_logits=torch.zeros(1, k, 9, 9), pixel_features=torch.zeros(1, 4, 9, 9),
                                class_logits=logits, boxes=torch.tensor([boxes]),
                                token_logits=torch.zeros(1, k, 2, 1, 1), masks=torch.stack(crops)[None])


def test_the_decoder_pastes_crops_into_boxes_and_paints_by_score():
    config = build_model(PRESET).config
    decode = TASKS[NAME].build_decoder(config, config.task())
    thing, stuff = SYNTH_INFO.thing_classes[0], 0
    assert stuff not in SYNTH_INFO.thing_classes
    full, empty = torch.ones(32, 32), torch.zeros(32, 32)
    # 33 × 33 network input; boxes as pixel edges / 33: rows 0..10 × cols 0..21, and rows 5..15 × cols 11..32.
    first, second = [0.0, 0.0, 22 / 33, 11 / 33], [11 / 33, 5 / 33, 1.0, 16 / 33]
    result = decode(output([first, second, first, second], [full, full, full, empty],
                           [(thing, 5.0), (thing, 9.0), (stuff, 20.0), (thing, 20.0)]),
                    Geometry(original=(33, 33), content=(33, 33), network=(33, 33)))
    assert result.task == NAME and [s.category for s in result.segments] == [thing, thing]
    high, low = result.segments                                          # score order; the empty crop is dropped
    assert high.score > low.score and high.bbox == (11, 5, 22, 11)
    expected_low = np.zeros((33, 33), dtype=bool)
    expected_low[0:11, 0:22] = True
    expected_low[5:16, 11:33] = False                                   # taken by the better instance
    np.testing.assert_array_equal(result.panoptic == low.panoptic_id, expected_low)


def test_hard_decoding_is_an_option_and_a_depth_tokenizer_is_refused():
    soft = build_model(PRESET).eval()
    hard = build_model(PRESET, **{"tasks.instance_tokens.token_decode": "hard"}).eval()
    hard.load_state_dict(soft.state_dict())
    images, _ = batch(1)
    with torch.no_grad():
        out_soft, out_hard = soft(images)[NAME].final, hard(images)[NAME].final
    head = hard.heads[NAME]
    expected = head.tokenizer.decode(out_hard.token_logits.flatten(0, 1).argmax(dim=1)).clamp(0, 1)
    torch.testing.assert_close(out_hard.masks, expected.view_as(out_hard.masks))
    assert out_soft.masks.shape == (1, 16, 32, 32) and (out_soft.masks - out_hard.masks).abs().max() > 1e-4
    with pytest.raises(UserError, match="depth tokenizer"):
        build_model(PRESET, **{"tasks.instance_tokens.tokenizer": "vqvae_tiny_synth_depth"})


def test_the_tokenizer_travels_inside_the_model_folder(tmp_path):
    tokenizer = build_model("vqvae_tiny_synth_mask")
    tokenizer.codebook.init_from_data(torch.randn(2, 32, 4, 4), generator=torch.Generator().manual_seed(3))
    folder = save_pretrained(tokenizer, tmp_path / "tok")
    model = build_model(PRESET, **{"tasks.instance_tokens.tokenizer_weights": str(folder)})
    torch.testing.assert_close(build_criterion(model.config).tokenizer.codebook.embedding,
                               tokenizer.codebook.embedding, rtol=0, atol=0)
    save_pretrained(model, tmp_path / "model")
    loaded = load_model(tmp_path / "model").heads[NAME].tokenizer
    torch.testing.assert_close(loaded.codebook.embedding, tokenizer.codebook.embedding, rtol=0, atol=0)
    with pytest.raises(UserError, match="does not exist"):
        build_criterion(replace(model.config, tasks=(replace(model.config.task(), tokenizer_weights="nowhere"),)))


def test_train_tokenizer_then_train_eval_and_predict(tmp_path, capsys):
    tok, run = tmp_path / "tok", tmp_path / "run"
    assert main(["train-tokenizer", "--preset", "vqvae_tiny_synth_mask", "--steps", "2", "--batch-size", "4",
                 "--train-samples", "4", "--eval-samples", "2", "--out", str(tok), "--json"]) == 0
    assert main(["train", "--config", str(RECIPE), "--steps", "2", "--batch-size", "2",
                 "--out", str(run), "--set", "data.workers=0", "--set", "progress=false",
                 "--set", "tensorboard=false", "--set", "eval_every=0",
                 "--set", f"model.tasks.instance_tokens.tokenizer_weights={tok}"]) == 0
    capsys.readouterr()
    assert main(["eval", "--model", str(run / "last"), "--limit", "2", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert {"ap", "ap50", "ap75"} <= set(metrics)
    image = tmp_path / "room.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(image)
    assert main(["predict", str(image), "--model", str(run / "last"), "--out", str(tmp_path / "out"),
                 "--no-progress"]) == 0
    assert (tmp_path / "out" / "room_instance.png").is_file()
    record = json.loads((tmp_path / "out" / "room_instances.json").read_text())
    assert record["height"] == 40 and record["width"] == 50


@pytest.mark.slow
def test_exports_to_onnx_and_predicts_from_the_graph(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    save_pretrained(build_model(PRESET).eval(), tmp_path / "model")
    graph = tmp_path / "model.onnx"
    assert main(["export", "onnx", "--model", str(tmp_path / "model"), "--out", str(graph), "--check"]) == 0
    report = capsys.readouterr().out
    assert "boxes" in report and "masks" in report
    image = tmp_path / "room.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(image)
    assert main(["predict", str(image), "--onnx", str(graph), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    assert (tmp_path / "out" / "room_instances.json").is_file()


def test_a_rectangular_cluster_is_its_own_box_prior():
    from polymax.model.heads.instance_tokens import cluster_box_prior

    logits = torch.zeros(1, 3, 10, 20)
    logits[0, 1, 2:5, 4:12] = 10.0                       # rows 2..4, columns 4..11
    logits[0, 0] = 5.0                                   # cluster 0 takes the rest; cluster 2 is empty
    logits[0, 0, 2:5, 4:12] = 0.0
    prior = cluster_box_prior(logits)[0]
    torch.testing.assert_close(prior[1], torch.tensor([8 / 20, 3.5 / 10, 8 / 20, 3 / 10]))
    torch.testing.assert_close(prior[2], torch.full((4,), 0.5))


def test_the_upload_page_serves_the_instance_tokens_answer():
    import http.client
    import io
    import threading
    import uuid

    from polymax.inference.predictor import Predictor
    from polymax.serve.app import make_server

    torch.manual_seed(0)
    httpd = make_server(Predictor(build_model(PRESET)), port=0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        buffer = io.BytesIO()
        Image.fromarray(np.asarray(batch(1)[0][0].permute(1, 2, 0), dtype=np.uint8)).save(buffer, format="PNG")
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"room.png\"\r\n\r\n"
                ).encode() + buffer.getvalue() + f"\r\n--{boundary}--\r\n".encode()
        connection = http.client.HTTPConnection(*httpd.server_address[:2], timeout=60)
        connection.request("POST", "/predict", body=body,
                           headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        response = connection.getresponse()
        page = response.read().decode()
        connection.close()
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)
    assert response.status == 200, page[:300]
    assert f'task <b id="task">{NAME}</b>' in page and 'id="pred-' in page
