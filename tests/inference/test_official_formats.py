"""`polymax predict --format official`: the data sets' own files, read back with our own panoptic reader (the
inverse convention), COCO RLEs that decode to the predicted masks, and the data sets' label ids."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import polymax
from polymax.cli import main
from polymax.config.model import TaskConfig
from polymax.data.images import read_png
from polymax.data.label_spaces import ade20k_panoptic_info, cityscapes_panoptic_info, coco_panoptic_info
from polymax.data.panoptic_formats import cityscapes_panoptic, coco_panoptic
from polymax.data.synthetic import SYNTH_INFO
from polymax.inference import coco_rle
from polymax.inference.official import OfficialWriter, image_id, label_ids
from polymax.inference.predictor import Predictor
from polymax.structures import SegmentationResult, SegmentInfo

KEEP_ALL = dict(postprocess__pixel_confidence=0.0, postprocess__thing_confidence=0.0,
                postprocess__stuff_confidence=0.0, postprocess__overlap=0.0, postprocess__thing_area_limit=0,
                postprocess__stuff_area_limit=0)


def _photos(folder, names, size=(37, 45)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(names))
    paths = []
    for name in names:
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / name)
        paths.append(folder / name)
    return paths


def _reader_ids(result: SegmentationResult, info) -> tuple[np.ndarray, np.ndarray]:
    """What our reader must give back for a prediction: semantic (void 255) and panoptic ids, instances numbered
    per class in segments_info order."""
    semantic = np.full(result.size, info.ignore_label, dtype=np.int64)
    panoptic = np.full(result.size, info.ignore_label * info.label_divisor, dtype=np.int64)
    count: dict[int, int] = {}
    for segment in result.segments:
        pixels = result.panoptic == segment.panoptic_id
        semantic[pixels] = segment.category
        instance = 0
        if segment.is_thing:
            count[segment.category] = instance = count.get(segment.category, 0) + 1
        panoptic[pixels] = segment.category * info.label_divisor + instance
    return semantic, panoptic


def _result(info, size=(20, 30)) -> SegmentationResult:
    """A hand-made panoptic result: two instances of one thing class, one of another, one stuff, void."""
    person, car = info.thing_classes[0], info.thing_classes[2]
    stuff = next(c for c in range(info.num_classes) if c not in info.thing_classes)
    panoptic = np.full(size, info.ignore_label * info.label_divisor, dtype=np.int64)
    parts = [(person, 1, np.s_[0:10, 0:10]), (person, 2, np.s_[10:20, 0:10]), (car, 1, np.s_[0:20, 10:18]),
             (stuff, 0, np.s_[0:20, 18:28])]
    segments = []
    for index, (category, instance, where) in enumerate(parts):
        panoptic_id = category * info.label_divisor + instance
        panoptic[where] = panoptic_id
        rows, cols = where
        segments.append(SegmentInfo(id=index + 1, panoptic_id=panoptic_id, category=category,
                                    category_name=info.class_names[category], is_thing=instance > 0,
                                    area=int((panoptic == panoptic_id).sum()),
                                    bbox=(cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start),
                                    score=0.5 + index / 10))
    semantic = np.where(panoptic == info.ignore_label * info.label_divisor, info.ignore_label,
                        panoptic // info.label_divisor).astype(np.int32)
    return SegmentationResult(task="panoptic", size=size, semantic=semantic, panoptic=panoptic, segments=segments)


@pytest.mark.parametrize("dataset", ["coco", "cityscapes"])
def test_panoptic_files_read_back_with_our_reader(tmp_path, dataset):
    info = coco_panoptic_info() if dataset == "coco" else cityscapes_panoptic_info()
    result = _result(info)
    if dataset == "coco":
        image, name = _photos(tmp_path / "images", ["000000000139.jpg"], size=result.size)[0], "000000000139"
    else:
        name = "frankfurt_000000_000294_leftImg8bit"
        image = _photos(tmp_path / "images" / "frankfurt", [f"{name}.png"], size=result.size)[0]
    writer = OfficialWriter(tmp_path / "out", info)
    writer.add(result, name=name, source=image)
    writer.close()
    record = json.loads((tmp_path / "out" / "panoptic.json").read_text())
    annotation = record["annotations"][0]
    assert annotation["image_id"] == (139 if dataset == "coco" else "frankfurt_000000_000294")
    # The data set's own category ids: COCO person 1, car 3; Cityscapes person 24, car 26.
    expected = [1, 1, 3] if dataset == "coco" else [24, 24, 26]
    assert [s["category_id"] for s in annotation["segments_info"][:3]] == expected
    reader = coco_panoptic if dataset == "coco" else cityscapes_panoptic
    sample = reader(root=tmp_path, json_file=tmp_path / "out" / "panoptic.json",
                    panoptic_dir=tmp_path / "out" / "panoptic", image_dir=tmp_path / "images")[0]
    semantic, panoptic = _reader_ids(result, info)
    np.testing.assert_array_equal(sample.semantic.numpy(), semantic)
    np.testing.assert_array_equal(sample.panoptic.numpy(), panoptic)
    assert not sample.crowd.any()


def test_label_ids_of_the_data_sets():
    coco, cityscapes = label_ids(coco_panoptic_info()), label_ids(cityscapes_panoptic_info())
    assert coco.official and coco.category_ids[:3] == (1, 2, 3) and coco.category_ids[-1] == 200
    assert len(set(coco.category_ids)) == 133 and coco.semantic_void == 0
    assert cityscapes.category_ids[:3] == (7, 8, 11) and cityscapes.category_ids[11] == 24     # road, person
    ade = label_ids(ade20k_panoptic_info())
    assert ade.category_ids[0] == 0 and ade.semantic_ids[0] == 1 and ade.semantic_void == 0   # 0 = other
    synth = label_ids(SYNTH_INFO)
    assert not synth.official and synth.category_ids == tuple(range(6)) and synth.semantic_void == 255
    # A label space named like a data set but with other classes is not taken for it.
    assert not label_ids(type(SYNTH_INFO)(name="coco_panoptic", class_names=("a", "b"))).official
    assert image_id("sub/000000000139", coco) == 139
    assert image_id("lindau_000000_000019_leftImg8bit", cityscapes) == "lindau_000000_000019"


def test_rle_round_trip_and_pycocotools():
    rng = np.random.default_rng(0)
    masks = [rng.random((13, 7)) < 0.5, np.zeros((5, 4), bool), np.ones((3, 9), bool)]
    big = np.zeros((300, 200), bool)
    big[40:260, 30:170] = True                    # long runs: multi-character and negative differences
    masks.append(big)
    for mask in masks:
        rle = coco_rle.encode(mask)
        np.testing.assert_array_equal(coco_rle.decode(rle), mask)
        np.testing.assert_array_equal(coco_rle.decode({"size": rle["size"], "counts": coco_rle.run_lengths(mask)}),
                                      mask)
    mask_utils = pytest.importorskip("pycocotools.mask", reason="pycocotools (the coco extra) not installed")
    for mask in masks:
        theirs = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        assert coco_rle.encode(mask)["counts"] == theirs["counts"].decode("ascii")
        np.testing.assert_array_equal(mask_utils.decode(coco_rle.encode(mask)), mask)


@pytest.fixture(scope="module")
def coco_model_dir(tmp_path_factory):
    """A tiny OneFormer-style model (panoptic, semantic, instance) in COCO's label space; weights drawn with
    std 1 so that the untrained model pastes several segments and thing instances."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "coco"
    model = polymax.build_model("oneformer_kmax_tiny_synth", dataset=coco_panoptic_info(), **KEEP_ALL)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 1.0)
    polymax.save_pretrained(model, path)
    return path


def test_predict_official_writes_every_task_for_two_images(tmp_path, coco_model_dir, capsys):
    images = _photos(tmp_path / "images", ["000000000139.jpg", "000000000285.png"])
    out = tmp_path / "out"
    assert main(["predict", *map(str, images), "--model", str(coco_model_dir), "--out", str(out), "--task", "all",
                 "--format", "official", "--batch-size", "2", "--workers", "1", "--no-progress"]) == 0
    assert "contiguous" not in capsys.readouterr().err          # COCO's own ids: no note
    predictor = Predictor.from_pretrained(coco_model_dir, task="all", batch_size=2)
    info = predictor.config.dataset
    ids = label_ids(info)
    reread = coco_panoptic(root=tmp_path, json_file=out / "panoptic.json", panoptic_dir=out / "panoptic",
                           image_dir=tmp_path / "images")
    instances = json.loads((out / "instances.json").read_text())
    # As the CLI ran them, a batch of two: the untrained model's segment scores tie up to float noise, and a batch of
    # one may round them otherwise (on some CPUs), which reorders the segments and so their mask-wise merging.
    batch = predictor.predict_batch([np.asarray(Image.open(path)) for path in images])
    for index, (path, expected) in enumerate(zip(images, batch)):
        panoptic = expected.results["panoptic"]
        semantic, panoptic_ids = _reader_ids(panoptic, info)
        np.testing.assert_array_equal(reread[index].semantic.numpy(), semantic)
        np.testing.assert_array_equal(reread[index].panoptic.numpy(), panoptic_ids)
        values = read_png(out / "semantic" / f"{path.stem}.png", bit_depth=8, channels=1)
        table = np.array(ids.semantic_ids)
        want = np.where(expected.results["semantic"].semantic == 255, 0, table[expected.results["semantic"].semantic
                                                                                .clip(0, 132)])
        np.testing.assert_array_equal(values, want)
        mine = [entry for entry in instances if entry["image_id"] == int(path.stem)]
        segments = expected.results["instance"].segments
        assert len(mine) == len(segments)
        for entry, segment in zip(mine, segments):
            assert set(entry) == {"image_id", "category_id", "segmentation", "score"}
            assert entry["category_id"] == ids.category_ids[segment.category]
            np.testing.assert_array_equal(coco_rle.decode(entry["segmentation"]),
                                          expected.results["instance"].panoptic == segment.panoptic_id)
    assert instances and all(a["segments_info"] for a in json.loads((out / "panoptic.json").read_text())
                             ["annotations"]), "KEEP_ALL post-processing should keep segments"
    assert sorted(p.name for p in out.iterdir()) == ["instances.json", "panoptic", "panoptic.json", "semantic"]


def test_an_unknown_label_space_writes_contiguous_ids_and_says_so(tmp_path, capsys):
    torch.manual_seed(0)
    model_dir = tmp_path / "synth"
    polymax.save_pretrained(polymax.build_model("kmax_tiny_test", tasks=(TaskConfig(name="panoptic"),),
                                                **KEEP_ALL), model_dir)
    image = _photos(tmp_path / "images", ["room.png"])[0]
    assert main(["predict", str(image), "--model", str(model_dir), "--out", str(tmp_path / "out"),
                 "--format", "official", "--no-progress"]) == 0
    assert "contiguous class ids" in capsys.readouterr().err
    record = json.loads((tmp_path / "out" / "panoptic.json").read_text())
    assert [c["id"] for c in record["categories"]] == list(range(6))
    assert record["annotations"][0]["image_id"] == "room"
