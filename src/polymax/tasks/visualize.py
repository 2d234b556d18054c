"""Pictures of predictions: colourised label maps, depth and normal maps, per-cluster probability maps,
and titled panels that put them side by side. Everything returns uint8 RGB arrays (H, W, 3) or PIL images.
The drawing primitives the tasks' ``pictures`` are made of; the predictor's files, the server and the demo use
them too.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Anchor colours of a perceptually ordered dark-blue → teal → yellow ramp (near → far for depth,
# low → high for probabilities); intermediate values are linearly interpolated.
_RAMP = np.array([
    [13, 8, 135], [84, 2, 163], [139, 10, 165], [185, 50, 137], [219, 92, 104],
    [244, 136, 73], [254, 188, 43], [240, 249, 33],
], dtype=np.float32)
VOID_COLOR = (0, 0, 0)


def ramp(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map values in [low, high] to the colour ramp; (...,) → (..., 3) uint8. NaN → black."""
    span = max(high - low, 1e-12)
    t = np.clip((np.asarray(values, dtype=np.float32) - low) / span, 0.0, 1.0) * (len(_RAMP) - 1)
    t = np.nan_to_num(t, nan=0.0)
    lower = np.floor(t).astype(np.int64).clip(0, len(_RAMP) - 2)
    frac = (t - lower)[..., None]
    rgb = _RAMP[lower] * (1 - frac) + _RAMP[lower + 1] * frac
    rgb[np.isnan(np.asarray(values, dtype=np.float32))] = 0
    return rgb.round().astype(np.uint8)


def colorize_depth(depth: np.ndarray, *, min_depth: float | None = None, max_depth: float | None = None,
                   invalid: np.ndarray | None = None) -> np.ndarray:
    """(H, W) metres → (H, W, 3); near is dark blue, far is yellow; invalid pixels black."""
    depth = np.asarray(depth, dtype=np.float32)
    valid = np.isfinite(depth) & (depth > 0) if invalid is None else ~invalid
    if min_depth is None or max_depth is None:
        finite = depth[valid]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        min_depth = lo if min_depth is None else min_depth
        max_depth = hi if max_depth is None else max_depth
    rgb = ramp(depth, min_depth, max_depth)
    rgb[~valid] = 0
    return rgb


def colorize_normals(normals: np.ndarray) -> np.ndarray:
    """(3, H, W) unit normals → (H, W, 3) with RGB = (n + 1) / 2; all-zero (invalid) normals black."""
    normals = np.asarray(normals, dtype=np.float32)
    rgb = ((normals.transpose(1, 2, 0) + 1.0) * 127.5).clip(0, 255).round().astype(np.uint8)
    rgb[np.abs(normals).sum(axis=0) == 0] = 0
    return rgb


def palette(num_classes: int, colors: Sequence[Sequence[int]] = ()) -> np.ndarray:
    """(num_classes, 3) uint8: the given colours, extended with well-spread generated ones."""
    from polymax.data.catalog import palette as generated_palette

    table = np.zeros((max(num_classes, 1), 3), dtype=np.uint8)
    generated = generated_palette(num_classes)
    for index in range(num_classes):
        table[index] = colors[index] if index < len(colors) else generated[index]
    return table


def colorize_semantic(semantic: np.ndarray, *, colors: Sequence[Sequence[int]], num_classes: int,
                      ignore_label: int = 255) -> np.ndarray:
    """(H, W) class ids → (H, W, 3); the ignore label and out-of-range ids are black."""
    semantic = np.asarray(semantic, dtype=np.int64)
    table = palette(num_classes, colors)
    valid = (semantic >= 0) & (semantic < num_classes) & (semantic != ignore_label)
    rgb = np.zeros(semantic.shape + (3,), dtype=np.uint8)
    rgb[valid] = table[semantic[valid]]
    return rgb


def colorize_panoptic(panoptic: np.ndarray, *, colors: Sequence[Sequence[int]], num_classes: int,
                      label_divisor: int, ignore_label: int = 255) -> np.ndarray:
    """(H, W) class·divisor + instance → (H, W, 3): class colour, instances shaded apart, boundaries dark."""
    panoptic = np.asarray(panoptic, dtype=np.int64)
    semantic, instance = panoptic // label_divisor, panoptic % label_divisor
    rgb = colorize_semantic(semantic, colors=colors, num_classes=num_classes, ignore_label=ignore_label)
    # Shade each instance of a class differently so touching instances stay distinguishable.
    shade = 1.0 - 0.35 * ((instance * 0.618034) % 1.0) * (instance > 0)
    rgb = (rgb.astype(np.float32) * shade[..., None]).round().astype(np.uint8)
    edges = np.zeros(panoptic.shape, dtype=bool)
    edges[:, 1:] |= panoptic[:, 1:] != panoptic[:, :-1]
    edges[1:, :] |= panoptic[1:, :] != panoptic[:-1, :]
    rgb[edges] = (rgb[edges] * 0.3).astype(np.uint8)
    return rgb


def probability_grid(probabilities: np.ndarray, *, columns: int = 8, gap: int = 2) -> np.ndarray:
    """(K, H, W) per-cluster probabilities in [0, 1] → one mosaic image (rows of `columns` maps)."""
    probabilities = np.asarray(probabilities, dtype=np.float32)
    k, h, w = probabilities.shape
    columns = max(1, min(columns, k))
    rows = (k + columns - 1) // columns
    mosaic = np.full((rows * (h + gap) - gap, columns * (w + gap) - gap, 3), 255, dtype=np.uint8)
    for index in range(k):
        r, c = divmod(index, columns)
        mosaic[r * (h + gap): r * (h + gap) + h, c * (w + gap): c * (w + gap) + w] = ramp(probabilities[index], 0, 1)
    return mosaic


def panel(tiles: Sequence[tuple[str, np.ndarray]], *, columns: int | None = None, tile_height: int = 160,
          title: str | None = None) -> Image.Image:
    """Titled tiles side by side (wrapped into rows of `columns`); tiles are resized to `tile_height`."""
    font = ImageFont.load_default()
    columns = columns or len(tiles)
    resized = []
    for caption, array in tiles:
        image = Image.fromarray(np.asarray(array, dtype=np.uint8))
        width = max(1, round(image.width * tile_height / image.height))
        resized.append((caption, image.resize((width, tile_height), Image.NEAREST)))
    caption_h, pad = 14, 6
    rows = [resized[i:i + columns] for i in range(0, len(resized), columns)]
    width = max(sum(img.width for _, img in row) + pad * (len(row) + 1) for row in rows)
    top = (caption_h + pad) if title else 0
    height = top + len(rows) * (tile_height + caption_h + pad) + pad
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, pad // 2), title, fill=(0, 0, 0), font=font)
    y = top + pad
    for row in rows:
        x = pad
        for caption, image in row:
            draw.text((x, y), caption, fill=(0, 0, 0), font=font)
            canvas.paste(image, (x, y + caption_h))
            x += image.width + pad
        y += tile_height + caption_h + pad
    return canvas


def legend(class_names: Sequence[str], colors: Sequence[Sequence[int]], *, present: Sequence[int] | None = None,
           swatch: int = 12) -> Image.Image:
    """A vertical colour legend of the classes (only those in `present`, if given)."""
    font = ImageFont.load_default()
    table = palette(len(class_names), colors)
    indices = list(range(len(class_names))) if present is None else [i for i in present if 0 <= i < len(class_names)]
    width = 12 + swatch + max((int(font.getlength(class_names[i])) for i in indices), default=40)
    canvas = Image.new("RGB", (width + 8, (swatch + 4) * max(len(indices), 1) + 4), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for row, index in enumerate(indices):
        y = 4 + row * (swatch + 4)
        draw.rectangle([4, y, 4 + swatch, y + swatch], fill=tuple(int(v) for v in table[index]))
        draw.text((8 + swatch + 4, y), class_names[index], fill=(0, 0, 0), font=font)
    return canvas


def with_legend(rgb: np.ndarray, class_names: Sequence[str], colors: Sequence[Sequence[int]],
                present: Sequence[int]) -> Image.Image:
    """The colour map with a legend of the ``present`` classes to its right (white background)."""
    key = legend(class_names, colors, present=present)
    picture = Image.fromarray(rgb)
    canvas = Image.new("RGB", (picture.width + key.width + 4, max(picture.height, key.height)), (255, 255, 255))
    canvas.paste(picture, (0, 0))
    canvas.paste(key, (picture.width + 4, 0))
    return canvas


def with_depth_scale(rgb: np.ndarray, low: float, high: float) -> Image.Image:
    """The depth picture with a colour bar and the metric range written under it."""
    import math

    picture = Image.fromarray(rgb)
    width = max(picture.width, 160)
    bar = ramp(np.linspace(0.0, 1.0, width)[None].repeat(8, axis=0), 0.0, 1.0)
    canvas = Image.new("RGB", (width, picture.height + 26), (255, 255, 255))
    canvas.paste(picture, (0, 0))
    canvas.paste(Image.fromarray(bar), (0, picture.height + 2))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    # Enough decimals that the two ends differ (a nearly flat depth map still gets a readable scale).
    decimals = min(4, max(2, 1 - math.floor(math.log10(max(high - low, 1e-4)))))
    draw.text((2, picture.height + 12), f"{low:.{decimals}f} m", fill=(0, 0, 0), font=font)
    label = f"{high:.{decimals}f} m"
    draw.text((width - 2 - int(font.getlength(label)), picture.height + 12), label, fill=(0, 0, 0), font=font)
    return canvas
