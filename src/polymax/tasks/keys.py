"""Keys that make a picture readable on its own: a legend of class colours (void explained), a depth colour bar
in metres, the colour code of surface normals, and the overlay of a colour map on the input image. Every key
is a PIL image drawn at its final size (text is never scaled); :func:`with_key` puts one to the right of a map.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from polymax.tasks.visualize import VOID_COLOR, palette, ramp

WHITE, BLACK, GREY = (255, 255, 255), (0, 0, 0), (128, 128, 128)
VOID_CAPTION = "void: no class / no segment"
LINE = 14   # pixels per text line of PIL's default font (10 px glyphs)


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default()


def text_width(text: str) -> int:
    return int(np.ceil(_font().getlength(text)))


def legend(class_names: Sequence[str], colors: Sequence[Sequence[int]], *, present: Sequence[int] | None = None,
           void: bool = False, swatch: int = 12, title: str | None = None) -> Image.Image:
    """A vertical legend of the classes (only those in ``present``, if given), then the void entry (black, with
    a grey outline) when ``void``."""
    table = palette(len(class_names), colors)
    indices = list(range(len(class_names))) if present is None else [i for i in present if 0 <= i < len(class_names)]
    entries = [(class_names[i], tuple(int(v) for v in table[i])) for i in indices]
    if void:
        entries.append((VOID_CAPTION, VOID_COLOR))
    lines = ([title] if title else []) + [name for name, _ in entries]
    width = 8 + swatch + 6 + max((text_width(line) for line in lines), default=40) + 6
    top = LINE + 4 if title else 0
    canvas = Image.new("RGB", (width, top + (swatch + 4) * max(len(entries), 1) + 4), WHITE)
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((4, 2), title, fill=BLACK, font=_font())
    for row, (name, color) in enumerate(entries):
        y = top + 4 + row * (swatch + 4)
        draw.rectangle([4, y, 4 + swatch, y + swatch], fill=color, outline=GREY if color == VOID_COLOR else None)
        draw.text((8 + swatch + 4, y), name, fill=BLACK, font=_font())
    return canvas


def depth_bar(low: float, high: float, *, height: int = 150, ticks: int = 5) -> Image.Image:
    """A vertical colour bar of the depth ramp, far (``high``) at the top, with tick labels in metres and a note
    that black means no valid depth. ``height``: the picture's height in pixels (at least 90)."""
    import math

    height = max(int(height), 90)
    top, bottom, bar_w = LINE + 6, LINE + 8, 14
    span = height - top - bottom
    # Enough decimals that neighbouring ticks differ (a nearly flat depth map still gets a readable scale).
    step = max(high - low, 1e-4) / max(ticks - 1, 1)
    decimals = min(4, max(1, -math.floor(math.log10(step)) + 1))
    labels = [f"{low + (high - low) * i / (ticks - 1):.{decimals}f} m" for i in range(ticks)]
    width = max(6 + bar_w + 4 + max(text_width(label) for label in labels) + 6,
                text_width("depth (m)") + 8, text_width("black: invalid") + 8)
    canvas = Image.new("RGB", (width, height), WHITE)
    values = np.linspace(1.0, 0.0, span)[:, None].repeat(bar_w, axis=1)        # (span, bar_w): top = far
    canvas.paste(Image.fromarray(ramp(values, 0.0, 1.0)), (6, top))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 2), "depth (m)", fill=BLACK, font=_font())
    for i, label in enumerate(labels):
        y = top + round((span - 1) * (1 - i / (ticks - 1)))
        draw.line([(6 + bar_w, y), (6 + bar_w + 3, y)], fill=BLACK)
        draw.text((6 + bar_w + 5, min(max(y - 6, top - 6), height - bottom - 6)), label, fill=BLACK, font=_font())
    draw.text((4, height - bottom + 2), "black: invalid", fill=BLACK, font=_font())
    return canvas


def normals_key(*, size: int = 80) -> Image.Image:
    """The colour of every normal a visible surface can have, drawn as a ball seen by the camera, with the
    coding spelled out: RGB = (n + 1) / 2 in the camera frame (x right, y down, z forward, away from the
    camera; a surface facing the camera has z < 0)."""
    grid = (np.arange(size) + 0.5) / size * 2 - 1                                  # pixel centres in [−1, 1]
    x, y = np.meshgrid(grid, grid)                                                 # (size, size): x right, y down
    inside = x * x + y * y <= 1.0
    z = -np.sqrt(np.clip(1.0 - x * x - y * y, 0.0, 1.0))                           # facing the camera
    ball = ((np.stack([x, y, z], axis=-1) + 1.0) * 127.5).round().astype(np.uint8)
    ball[~inside] = 255
    lines = ["normals n = (x, y, z),", "colour = (n + 1) / 2:", "R: x, + = right", "G: y, + = down",
             "B: z, + = away from camera", "black: invalid"]
    width = max(size + 8, max(text_width(line) for line in lines) + 8)
    canvas = Image.new("RGB", (width, LINE + 4 + size + 4 + LINE * len(lines)), WHITE)
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 2), "normal colours", fill=BLACK, font=_font())
    canvas.paste(Image.fromarray(ball), (4, LINE + 4))
    for row, line in enumerate(lines):
        draw.text((4, LINE + 8 + size + row * LINE), line, fill=BLACK, font=_font())
    return canvas


def with_key(picture: Image.Image | np.ndarray, key: Image.Image | None, *, gap: int = 6) -> Image.Image:
    """The picture with its key to the right, on a white background tall enough for both."""
    picture = Image.fromarray(picture) if isinstance(picture, np.ndarray) else picture
    if key is None:
        return picture
    canvas = Image.new("RGB", (picture.width + gap + key.width, max(picture.height, key.height)), WHITE)
    canvas.paste(picture, (0, 0))
    canvas.paste(key, (picture.width + gap, 0))
    return canvas


def overlay(image: np.ndarray, colors: np.ndarray, *, alpha: float = 0.5) -> np.ndarray:
    """(H, W, 3) input and (H, W, 3) colour map of the same size → the map laid over the image with weight
    ``alpha``; uint8."""
    if image.shape != colors.shape:
        raise ValueError(f"overlay needs equal sizes, got {image.shape} and {colors.shape}")
    mixed = image.astype(np.float32) * (1.0 - alpha) + colors.astype(np.float32) * alpha
    return mixed.round().clip(0, 255).astype(np.uint8)
