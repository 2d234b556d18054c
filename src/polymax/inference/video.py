"""``polymax predict clip.mp4``: a video predicted frame by frame and written back as a video (the ``video``
extra: PyAV, which bundles FFmpeg).

For a video NAME, each task writes ``NAME_TASK_overlay.mp4`` (under OUT/TASK/ with several tasks): every frame
with the task's colour map laid over it (:func:`polymax.tasks.keys.overlay`), at the video's size and frame rate,
H.264 (MPEG-4 part 2 where the FFmpeg build lacks libx264). Frames go through the model ``batch_size`` at a time,
exactly as images do; sizes are padded to even numbers (by repeating the last row / column), as the encoders'
4:2:0 colour needs.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from polymax.errors import UserError
from polymax.structures import MultiTaskResult, Result
from polymax.tasks import get_task
from polymax.tasks.keys import overlay

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def import_av() -> Any:
    try:
        import av
    except ImportError:
        raise UserError("videos need PyAV: run `pip install av` (or install polymax with the `video` extra: "
                        "`pip install polymax[video]`)") from None
    return av


def predict_video(predictor, path: Path, *, out_dir: Path, name: str, progress: bool = True) -> list[Path]:
    """Predict every frame of the video at ``path`` and write one overlay video per task; returns the files.
    A UserError (without the file's name: the caller adds it) for a missing extra or an unreadable video."""
    from tqdm import tqdm

    av = import_av()
    writers: dict[str, _Writer] = {}
    try:
        with av.open(str(path)) as source:
            stream = source.streams.video[0]
            rate = stream.average_rate or 25
            bar = tqdm(total=stream.frames or None, unit="frame", desc=Path(path).name, disable=not progress,
                       file=sys.stderr, leave=False)
            for frames in _batches((frame.to_ndarray(format="rgb24") for frame in source.decode(stream)),
                                   predictor.batch_size):
                for frame, result in zip(frames, predictor.predict_batch(frames)):
                    several = isinstance(result, MultiTaskResult)
                    answers = result.results if several else {result.task: result}
                    for task, answer in answers.items():
                        if task not in writers:
                            folder = out_dir / task if several else out_dir
                            writers[task] = _Writer(av, folder / f"{name}_{task}_overlay.mp4", rate)
                        writers[task].write(_overlay(frame, answer, predictor.config))
                bar.update(len(frames))
            bar.close()
    except (av.FFmpegError, IndexError, OSError) as error:
        raise UserError(f"cannot read or write the video ({error})") from None
    finally:
        for writer in writers.values():
            writer.close()
    if not writers:
        raise UserError("the video has no frames")
    return [writer.path for writer in writers.values()]


def _batches(frames: Iterator[np.ndarray], size: int) -> Iterator[list[np.ndarray]]:
    batch: list[np.ndarray] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _overlay(frame: np.ndarray, result: Result, config) -> np.ndarray:
    """(H, W, 3) uint8: the task's colour map over the frame, padded to even sides."""
    picture = overlay(frame, get_task(result.task).picture_map(result, config))
    pad = ((0, picture.shape[0] % 2), (0, picture.shape[1] % 2), (0, 0))
    return np.pad(picture, pad, mode="edge")


class _Writer:
    """One output video, opened at its first frame (the size is known then)."""

    def __init__(self, av: Any, path: Path, rate) -> None:
        self.av, self.path, self.rate = av, path, rate
        self.container: Any = None
        self.stream: Any = None

    def write(self, picture: np.ndarray) -> None:
        if self.container is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.container = self.av.open(str(self.path), mode="w")
            codec = "libx264" if "libx264" in self.av.codecs_available else "mpeg4"
            self.stream = self.container.add_stream(codec, rate=self.rate)
            self.stream.height, self.stream.width = picture.shape[:2]
            self.stream.pix_fmt = "yuv420p"
        frame = self.av.VideoFrame.from_ndarray(picture, format="rgb24")
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        if self.container is not None:
            for packet in self.stream.encode():          # flush the encoder's delayed frames
                self.container.mux(packet)
            self.container.close()
            self.container = None
