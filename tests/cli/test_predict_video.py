"""`polymax predict clip.mp4` (the video extra): every frame predicted and written back as a video of overlays;
without PyAV a video is one counted failure with the install hint."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from polymax.cli import main
from polymax.inference.predictor import Predictor
from polymax.tasks import get_task
from polymax.tasks.keys import overlay

HAVE_AV = importlib.util.find_spec("av") is not None


def _clip(path, frames: int = 3, size=(31, 45)):
    """A tiny video of smooth moving gradients (lossy codecs keep smooth pictures close); returns its frames."""
    import av

    rows, cols = np.mgrid[0: size[0], 0: size[1]]
    pictures = [np.stack([(rows * 6 + 20 * t) % 256, (cols * 5) % 256, np.full(size, 40 * t)], axis=-1)
                .astype(np.uint8) for t in range(frames)]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.height, stream.width = size[0] + 1, size[1] + 1        # even sides for 4:2:0
        stream.pix_fmt = "yuv420p"
        for picture in pictures:
            even = np.pad(picture, ((0, 1), (0, 1), (0, 0)), mode="edge")
            for packet in stream.encode(av.VideoFrame.from_ndarray(even, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return pictures


@pytest.mark.skipif(not HAVE_AV, reason="the video extra (PyAV) is not installed")
def test_a_video_is_predicted_frame_by_frame_into_a_video(tmp_path, depth_dir, capsys):
    import av

    _clip(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "clip.mp4"), "--model", str(depth_dir), "--out", str(out),
                 "--batch-size", "2", "--no-progress"]) == 0
    assert "predicted 1 of 1" in capsys.readouterr().out
    with av.open(str(tmp_path / "clip.mp4")) as source:               # the frames as the model saw them
        inputs = [frame.to_ndarray(format="rgb24") for frame in source.decode(video=0)]
    with av.open(str(out / "clip_depth_overlay.mp4")) as written:
        frames = [frame.to_ndarray(format="rgb24") for frame in written.decode(video=0)]
        rate = written.streams.video[0].average_rate
    assert len(frames) == len(inputs) == 3 and frames[0].shape == inputs[0].shape and rate == 10
    predictor = Predictor.from_pretrained(depth_dir, batch_size=3)
    for frame, source_frame, result in zip(frames, inputs, predictor.predict_batch(inputs)):
        expected = overlay(source_frame, get_task("depth").picture_map(result, predictor.config))
        # A lossy codec: the written frame is much nearer the overlay than the plain input frame is.
        error = np.abs(frame.astype(float) - expected).mean()
        assert error < 0.5 * np.abs(source_frame.astype(float) - expected).mean()


def test_without_pyav_a_video_is_one_counted_failure(tmp_path, depth_dir, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_av(name, *args, **kwargs):
        if name == "av":
            raise ImportError("no av")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_av)
    (tmp_path / "clip.mp4").write_bytes(b"not read")
    image = tmp_path / "a.png"
    from PIL import Image
    Image.fromarray(np.zeros((20, 30, 3), dtype=np.uint8)).save(image)
    assert main(["predict", str(tmp_path / "clip.mp4"), str(image), "--model", str(depth_dir), "--out",
                 str(tmp_path / "out"), "--no-progress", "--workers", "0"]) == 1
    captured = capsys.readouterr()
    assert "predicted 1 of 2" in captured.out and "clip.mp4" in captured.err and "pip install av" in captured.err
