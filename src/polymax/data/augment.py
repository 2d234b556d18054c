"""Joint training transforms on :class:`Sample`: every geometric op moves the image and all labels together.

Conventions (kMaX spec §5, depth_normals_conventions §6.2):
- After augmentation the image is float32 (3, H, W) in 0..255 (not rounded), so padding can use the exact
  mean pixel 127.5, which the model's ``x / 127.5 − 1`` maps to 0 as in deeplab2. Photometric ops that
  TF defines on uint8 (AutoAugment) quantise like TF does.
- Images resize bilinearly with align_corners=True; labels, depth and normals use nearest neighbours
  (align_corners=True index mapping), so no class, depth or normal value is ever invented by interpolation.
- Scaling an image by s makes the scene look s times closer, so metric depth is divided by s.
- Padding / out-of-view regions: semantic 255 (ignore), panoptic ignore·label_divisor (void), depth 0,
  normals 0 (invalid), crowd False.
- Horizontal flip negates the x component of the camera-frame normals (x right, y down, z forward);
  an in-plane rotation rotates their (x, y) components with the image.
- Randomness comes only from the ``numpy.random.Generator`` passed in, so a data-loader position can be
  replayed by re-seeding (e.g. ``np.random.default_rng([seed, epoch, index])``).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from polymax.data.autoaugment import apply_simple_policy
from polymax.data.sample import Sample
from polymax.geometry import nearest_indices, resize_bilinear

_LABEL_FIELDS = ("semantic", "panoptic", "crowd")


def as_float_image(sample: Sample) -> Sample:
    return replace(sample, image=sample.image.to(torch.float32))


def resize(sample: Sample, size: tuple[int, int], *, depth_scale: float | None = None) -> Sample:
    """Resize to ``size`` = (H, W). Depth is divided by ``depth_scale`` (default: the mean of the two axis
    scales); pass the scale the caller drew so the division is exactly the augmentation's factor."""
    height, width = sample.image.shape[-2:]
    if (height, width) == tuple(size):
        return sample
    rows, cols = nearest_indices(height, size[0]), nearest_indices(width, size[1])
    nearest = lambda x: None if x is None else x[..., rows, :][..., cols]
    image = resize_bilinear(sample.image.to(torch.float32)[None], tuple(size))[0]
    if depth_scale is None:
        depth_scale = 0.5 * (size[0] / height + size[1] / width)
    depth = None if sample.depth is None else nearest(sample.depth) / depth_scale
    return replace(sample, image=image, semantic=nearest(sample.semantic), panoptic=nearest(sample.panoptic),
                   crowd=nearest(sample.crowd), depth=depth, normals=nearest(sample.normals))


def scale_choices(min_scale: float, max_scale: float, step: float) -> np.ndarray:
    """deeplab2's discrete scales {min, min+step, …, max}; a single value when min == max."""
    if min_scale > max_scale:
        raise ValueError(f"min_scale {min_scale} > max_scale {max_scale}")
    if step <= 0 or min_scale == max_scale:
        return np.array([min_scale])
    count = int(round((max_scale - min_scale) / step)) + 1
    return np.linspace(min_scale, max_scale, count)


def random_scale(sample: Sample, generator: np.random.Generator, *, min_scale: float, max_scale: float,
                 step: float) -> Sample:
    """Rescale by a scale drawn uniformly from scale_choices; new size = floor(size · s) as in deeplab2."""
    scale = float(generator.choice(scale_choices(min_scale, max_scale, step)))
    height, width = sample.image.shape[-2:]
    size = (max(int(height * scale), 1), max(int(width * scale), 1))
    return resize(sample, size, depth_scale=scale)


def crop(sample: Sample, top: int, left: int, height: int, width: int) -> Sample:
    """Crop every field to rows top:top+height, columns left:left+width."""
    cut = lambda x: None if x is None else x[..., top:top + height, left:left + width]
    return replace(sample, image=cut(sample.image), semantic=cut(sample.semantic), panoptic=cut(sample.panoptic),
                   crowd=cut(sample.crowd), depth=cut(sample.depth), normals=cut(sample.normals))


def pad(sample: Sample, top: int, bottom: int, left: int, right: int, *, pad_value: float = 127.5,
        ignore_label: int = 255, label_divisor: int = 1000) -> Sample:
    """Pad every field: image with pad_value, labels with ignore / void, depth and normals with 0."""
    if top == bottom == left == right == 0:
        return sample
    widths = (left, right, top, bottom)
    fill = lambda x, value: None if x is None else F.pad(x[None], widths, value=value)[0] if x.dtype != torch.bool \
        else F.pad(x[None].to(torch.uint8), widths, value=int(value))[0].bool()
    return replace(sample, image=fill(sample.image.to(torch.float32), pad_value),
                   semantic=fill(sample.semantic, ignore_label),
                   panoptic=fill(sample.panoptic, ignore_label * label_divisor),
                   crowd=fill(sample.crowd, 0), depth=fill(sample.depth, 0.0), normals=fill(sample.normals, 0.0))


def random_pad_and_crop(sample: Sample, generator: np.random.Generator, crop_size: tuple[int, int], *,
                        pad_value: float = 127.5, ignore_label: int = 255, label_divisor: int = 1000) -> Sample:
    """Pad up to crop_size at a random offset (if smaller), then take a random crop_size window."""
    height, width = sample.image.shape[-2:]
    pad_h, pad_w = max(crop_size[0] - height, 0), max(crop_size[1] - width, 0)
    pad_top, pad_left = int(generator.integers(0, pad_h + 1)), int(generator.integers(0, pad_w + 1))
    sample = pad(sample, pad_top, pad_h - pad_top, pad_left, pad_w - pad_left, pad_value=pad_value,
                 ignore_label=ignore_label, label_divisor=label_divisor)
    height, width = sample.image.shape[-2:]
    top = int(generator.integers(0, height - crop_size[0] + 1))
    left = int(generator.integers(0, width - crop_size[1] + 1))
    return crop(sample, top, left, crop_size[0], crop_size[1])


def hflip(sample: Sample) -> Sample:
    """Mirror left-right; the normals' x component changes sign (camera x points right)."""
    flip = lambda x: None if x is None else x.flip(-1)
    normals = None
    if sample.normals is not None:
        normals = sample.normals.flip(-1) * torch.tensor([-1.0, 1.0, 1.0]).view(3, 1, 1)
    return replace(sample, image=flip(sample.image), semantic=flip(sample.semantic), panoptic=flip(sample.panoptic),
                   crowd=flip(sample.crowd), depth=flip(sample.depth), normals=normals)


def rotate(sample: Sample, degrees: float, *, ignore_label: int = 255, label_divisor: int = 1000,
           image_fill: float = 0.0) -> Sample:
    """Rotate the content by ``degrees`` counter-clockwise on screen about the image centre.

    A roll of the camera about its optical axis: depth values are unchanged, normals' (x, y) rotate with the
    image. Image: bilinear; labels / depth / normals: nearest. Pixels that come from outside the image get
    image_fill (0 as in the depth recipe), ignore / void labels, depth 0 and normals 0.
    """
    height, width = sample.image.shape[-2:]
    angle = math.radians(degrees)
    # Content rotation in pixel coordinates (x right, y down): on screen counter-clockwise means
    # p_out = R p_in with R = [[cos, sin], [-sin, cos]]. grid_sample needs p_in = R^T p_out in the
    # normalised frame, where x_n = x / (W/2) and y_n = y / (H/2): theta = D^-1 R^T D, D = diag(W/2, H/2).
    cos, sin = math.cos(angle), math.sin(angle)
    rot = torch.tensor([[cos, sin], [-sin, cos]], dtype=torch.float64)
    scale = torch.diag(torch.tensor([width / 2.0, height / 2.0], dtype=torch.float64))
    theta = torch.linalg.inv(scale) @ rot.T @ scale
    affine = torch.cat([theta, torch.zeros(2, 1, dtype=torch.float64)], dim=1).to(torch.float32)[None]
    grid = F.affine_grid(affine, [1, 1, height, width], align_corners=False)

    def warp(x: torch.Tensor, mode: str) -> torch.Tensor:
        batched = x.reshape(1, -1, height, width).to(torch.float64 if mode == "nearest" else torch.float32)
        out = F.grid_sample(batched, grid.to(batched.dtype), mode=mode, padding_mode="zeros", align_corners=False)
        return out.reshape(x.shape)

    inside = warp(torch.ones(height, width), "nearest") > 0.5
    image = warp(sample.image.to(torch.float32), "bilinear")
    image = torch.where(inside, image, torch.full_like(image, image_fill))

    def labels(x: torch.Tensor | None, void: int) -> torch.Tensor | None:
        if x is None:
            return None
        out = warp(x, "nearest").round().to(x.dtype)
        return torch.where(inside, out, torch.full_like(out, void))

    normals = None
    if sample.normals is not None:
        moved = warp(sample.normals, "nearest").to(torch.float32)
        xy = torch.einsum("ij,jhw->ihw", rot.to(torch.float32), moved[:2])
        normals = torch.where(inside, torch.cat([xy, moved[2:]]), torch.zeros_like(moved))
    depth = None if sample.depth is None else torch.where(inside, warp(sample.depth, "nearest").float(),
                                                           torch.zeros_like(sample.depth))
    return replace(sample, image=image, semantic=labels(sample.semantic, ignore_label),
                   panoptic=labels(sample.panoptic, ignore_label * label_divisor),
                   crowd=None if sample.crowd is None else labels(sample.crowd, 0), depth=depth, normals=normals)


def color_jitter(image: torch.Tensor, generator: np.random.Generator, *, gamma: tuple[float, float] = (0.9, 1.1),
                 brightness: tuple[float, float] = (0.75, 1.25),
                 channel: tuple[float, float] = (0.9, 1.1)) -> torch.Tensor:
    """The depth recipe's colour augmentation (BinsFormer/AdaBins NYU): gamma, brightness, per-channel gain.

    image: float (3, H, W) in 0..255 → same, clipped to 0..255.
    """
    unit = image.to(torch.float32) / 255.0
    unit = unit.clamp(0, 1) ** float(generator.uniform(*gamma))
    unit = unit * float(generator.uniform(*brightness))
    gains = torch.tensor(generator.uniform(*channel, size=3), dtype=torch.float32).view(3, 1, 1)
    return (unit * gains).clamp(0, 1) * 255.0


def panoptic_copy_paste(sample: Sample, source: Sample, generator: np.random.Generator, *,
                        thing_classes: tuple[int, ...], label_divisor: int, ignore_label: int = 255,
                        stuff_prob: float = 0.5) -> Sample:
    """Paste segments of ``source`` (same size) over ``sample`` (kMaX spec §5, thing: all / stuff: random /
    void: none). Pasted thing instances get ids above the target's so no two instances merge. Depth / normals
    under pasted pixels come from the source when it has them, otherwise become invalid."""
    if sample.panoptic is None or source.panoptic is None:
        raise ValueError("panoptic copy-paste needs panoptic labels on both samples")
    if sample.image.shape != source.image.shape:
        raise ValueError(f"copy-paste needs equal sizes, got {tuple(sample.image.shape)} and "
                         f"{tuple(source.image.shape)}")
    things = set(int(t) for t in thing_classes)
    paste = torch.zeros_like(source.panoptic, dtype=torch.bool)
    new_panoptic = source.panoptic.clone()
    next_instance: dict[int, int] = {}
    for segment in torch.unique(source.panoptic).tolist():
        label, instance = divmod(int(segment), label_divisor)
        if label == ignore_label:
            continue  # void and padding are never pasted
        is_thing = label in things
        if not is_thing and generator.random() >= stuff_prob:
            continue
        mask = source.panoptic == segment
        paste |= mask
        if is_thing and instance > 0:
            if label not in next_instance:
                same_class = sample.panoptic[(sample.panoptic // label_divisor) == label] % label_divisor
                next_instance[label] = int(same_class.max()) + 1 if same_class.numel() else 1
            new_panoptic[mask] = label * label_divisor + next_instance[label]
            next_instance[label] += 1
    semantic_source = source.semantic if source.semantic is not None else source.panoptic // label_divisor
    choose = lambda target, pasted: None if target is None else torch.where(
        paste.expand_as(target) if target.dim() == 3 else paste, pasted, target)
    depth = sample.depth if sample.depth is None else choose(
        sample.depth, source.depth if source.depth is not None else torch.zeros_like(sample.depth))
    normals = sample.normals if sample.normals is None else choose(
        sample.normals, source.normals if source.normals is not None else torch.zeros_like(sample.normals))
    crowd = sample.crowd
    if crowd is not None or source.crowd is not None:
        crowd_target = crowd if crowd is not None else torch.zeros_like(paste)
        crowd = choose(crowd_target, source.crowd if source.crowd is not None else torch.zeros_like(paste))
    return replace(sample, image=choose(sample.image.to(torch.float32), source.image.to(torch.float32)),
                   panoptic=choose(sample.panoptic, new_panoptic), semantic=choose(sample.semantic, semantic_source),
                   depth=depth, normals=normals, crowd=crowd)


class TrainAugmentation:
    """The composed training pipeline, built from explicit arguments.

    Order (deeplab2 ``preprocess_image_and_label`` + the depth recipe): border crop → resize longer side →
    random scale → rotation → AutoAugment → colour jitter → pad + random crop → horizontal flip → copy-paste
    (the paste source goes through the same pipeline with its scale range × copy_paste_scale).

    kMaX COCO: ``TrainAugmentation(crop_size=(1281, 1281), resize_longer_side=1281, min_scale=0.3,
    max_scale=1.7, autoaugment="simple", copy_paste=True, thing_classes=..., label_divisor=256)``.
    NYUD-v2 depth (BinsFormer): ``border_crop=(45, 472, 43, 608), rotation_degrees=2.5, crop_size=(416, 544),
    color_jitter_prob=0.5``; normals: the same without rotation (PolyMaX appendix A). ``border_crop_size``: cut
    the border only from images of this (H, W) (None = from every image).
    """

    def __init__(self, *, crop_size: tuple[int, int], min_scale: float = 1.0, max_scale: float = 1.0,
                 scale_step: float = 0.1, resize_longer_side: int | None = None, autoaugment: str | None = None,
                 autoaugment_magnitude_scale: float = 1.0, flip_prob: float = 0.5, rotation_degrees: float = 0.0,
                 rotation_prob: float = 0.5, color_jitter_prob: float = 0.0,
                 border_crop: tuple[int, int, int, int] | None = None,
                 border_crop_size: tuple[int, int] | None = None, copy_paste: bool = False,
                 copy_paste_scale: float = 0.5, thing_classes: tuple[int, ...] = (), label_divisor: int = 1000,
                 ignore_label: int = 255, pad_value: float = 127.5) -> None:
        if autoaugment not in (None, "simple"):
            raise ValueError(f"unknown autoaugment policy {autoaugment!r}; only 'simple' exists")
        self.crop_size = tuple(crop_size)
        self.min_scale, self.max_scale, self.scale_step = min_scale, max_scale, scale_step
        self.resize_longer_side = resize_longer_side
        self.autoaugment, self.autoaugment_magnitude_scale = autoaugment, autoaugment_magnitude_scale
        self.flip_prob, self.rotation_degrees, self.rotation_prob = flip_prob, rotation_degrees, rotation_prob
        self.color_jitter_prob, self.border_crop = color_jitter_prob, border_crop
        self.border_crop_size = None if border_crop_size is None else tuple(border_crop_size)
        self.copy_paste, self.copy_paste_scale = copy_paste, copy_paste_scale
        self.thing_classes, self.label_divisor = tuple(thing_classes), label_divisor
        self.ignore_label, self.pad_value = ignore_label, pad_value

    def __call__(self, sample: Sample, generator: np.random.Generator, paste_source: Sample | None = None) -> Sample:
        out = self._single(sample, generator, scale_multiplier=1.0)
        if self.copy_paste and paste_source is not None and out.panoptic is not None:
            source = self._single(paste_source, generator, scale_multiplier=self.copy_paste_scale)
            out = panoptic_copy_paste(out, source, generator, thing_classes=self.thing_classes,
                                      label_divisor=self.label_divisor, ignore_label=self.ignore_label)
        return out

    def _single(self, sample: Sample, generator: np.random.Generator, *, scale_multiplier: float) -> Sample:
        sample = as_float_image(sample)
        if self.border_crop is not None and self.border_crop_size in (None, tuple(sample.image.shape[-2:])):
            top, bottom, left, right = self.border_crop
            sample = crop(sample, top, left, bottom - top, right - left)
        if self.resize_longer_side:
            height, width = sample.image.shape[-2:]
            factor = self.resize_longer_side / max(height, width)
            sample = resize(sample, (max(round(height * factor), 1), max(round(width * factor), 1)),
                            depth_scale=factor)
        sample = random_scale(sample, generator, min_scale=self.min_scale * scale_multiplier,
                              max_scale=self.max_scale * scale_multiplier, step=self.scale_step * scale_multiplier)
        if self.rotation_degrees > 0 and generator.random() < self.rotation_prob:
            angle = float(generator.uniform(-self.rotation_degrees, self.rotation_degrees))
            sample = rotate(sample, angle, ignore_label=self.ignore_label, label_divisor=self.label_divisor)
        if self.autoaugment:
            sample = replace(sample, image=apply_simple_policy(sample.image, generator,
                                                               magnitude_scale=self.autoaugment_magnitude_scale))
        if self.color_jitter_prob > 0 and generator.random() < self.color_jitter_prob:
            sample = replace(sample, image=color_jitter(sample.image, generator))
        sample = random_pad_and_crop(sample, generator, self.crop_size, pad_value=self.pad_value,
                                     ignore_label=self.ignore_label, label_divisor=self.label_divisor)
        if generator.random() < self.flip_prob:
            sample = hflip(sample)
        return sample


def depth_recipe(options, dataset, *, crop_size: tuple[int, int], thing_classes: tuple[int, ...] = (),
                 label_divisor: int = 1000, ignore_label: int = 255) -> TrainAugmentation:
    """The PolyMaX depth / normals training pipeline (appendix A, BinsFormer's NYU recipe) from a TrainConfig's
    ``augment`` section (recipe 'depth' or 'normals'): the data set's border crop (its protocol's, for images of
    the protocol's size), rotation (depth only), colour jitter, random crop, flip; no random scaling."""
    from polymax.config.train import AUGMENT_RECIPES
    from polymax.data.protocol import protocol_of

    rotation, jitter = AUGMENT_RECIPES[options.recipe]
    rotation = rotation if options.rotation_degrees is None else options.rotation_degrees
    jitter = jitter if options.color_jitter_prob is None else options.color_jitter_prob
    protocol = protocol_of(dataset)
    border = None
    if protocol is not None and protocol.train_border_crop is not None:
        border = (protocol.train_border_crop, protocol.size)
    return TrainAugmentation(crop_size=crop_size, flip_prob=0.5 if options.flip else 0.0, rotation_degrees=rotation,
                             color_jitter_prob=jitter, border_crop=border[0] if border else None,
                             border_crop_size=border[1] if border else None, thing_classes=thing_classes,
                             label_divisor=label_divisor, ignore_label=ignore_label)
