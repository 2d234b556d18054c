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


def panel(tiles: Sequence[tuple[str, np.ndarray | Image.Image]], *, columns: int | None = None,
          tile_height: int = 160, title: str | None = None) -> Image.Image:
    """Captioned tiles side by side (wrapped into rows of ``columns``) under an optional title. Arrays are
    resized to ``tile_height`` (nearest); PIL images (keys, legends: text) are pasted at their own size. Every
    cell is as wide as its caption and the canvas as wide as its title, so no text is cut off."""
    font = ImageFont.load_default()
    columns = columns or len(tiles)
    cells = []
    for caption, tile in tiles:
        if isinstance(tile, Image.Image):
            image = tile
        else:
            image = Image.fromarray(np.asarray(tile, dtype=np.uint8))
            image = image.resize((max(1, round(image.width * tile_height / image.height)), tile_height),
                                 Image.NEAREST)
        cells.append((caption, image, max(image.width, int(np.ceil(font.getlength(caption))))))
    caption_h, pad = 14, 6
    rows = [cells[i:i + columns] for i in range(0, len(cells), columns)]
    heights = [max(image.height for _, image, _ in row) for row in rows]
    width = max(sum(w for _, _, w in row) + pad * (len(row) + 1) for row in rows)
    if title:
        width = max(width, int(np.ceil(font.getlength(title))) + 2 * pad)
    top = (caption_h + pad) if title else 0
    height = top + sum(h + caption_h + pad for h in heights) + pad
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, pad // 2), title, fill=(0, 0, 0), font=font)
    y = top + pad
    for row, row_height in zip(rows, heights):
        x = pad
        for caption, image, cell_width in row:
            draw.text((x, y), caption, fill=(0, 0, 0), font=font)
            canvas.paste(image, (x, y + caption_h))
            x += cell_width + pad
        y += row_height + caption_h + pad
    return canvas


def cluster_panel(probabilities: np.ndarray, captions: Sequence[tuple[float, str]], *, tile_height: int = 70,
                  columns: int = 8, title: str = "per-cluster probability maps") -> Image.Image:
    """(K, H, W) per-cluster probabilities, each tile captioned with what its cluster stands for (a task's
    ``cluster_captions``: (sort key, caption) per cluster) and ordered by the sort key. One colour scale for
    all tiles, from 0 (dark blue) to the largest probability shown (yellow), stated in the title."""
    if len(captions) != len(probabilities):
        captions = [(float(k), f"cluster {k}") for k in range(len(probabilities))]
    order = sorted(range(len(captions)), key=lambda k: captions[k][0])
    top = max(float(np.max(probabilities)), 1e-6)
    tiles = [(captions[k][1], ramp(probabilities[k], 0.0, top)) for k in order]
    return panel(tiles, columns=columns, tile_height=tile_height,
                 title=f"{title} ({len(tiles)} clusters; blue = 0, yellow = {top:.2f})")
