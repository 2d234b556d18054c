"""Built-in synthetic indoor scenes: the default data set, generated on the fly, no download.

Each sample is a random room (floor, walls, ceiling) with 1-5 boxes, spheres and vertical cylinders of
random sizes, yaws and materials standing on the floor, seen by a pinhole camera with NYUv2-like
intrinsics from a random viewpoint (height 1.1-1.7 m, any yaw, 0-22 degrees down, small roll) and lit by
one point light near the ceiling. The ray caster (:mod:`polymax.data.synthetic_render`) gives exact
labels at every pixel centre:

- semantic: 0 floor, 1 wall, 2 ceiling (stuff), 3 box, 4 sphere, 5 cylinder (things); no void.
- panoptic: class * 1000 + instance; instance 0 on stuff, 1..5 on things (unique within an image).
- depth: metres along the optical axis (camera z, not ray length), always in
  (SYNTH_MIN_DEPTH, SYNTH_MAX_DEPTH].
- normals: unit camera-frame normals, x right, y down, z forward (the NYUv2 / DSINE convention of
  ``depth_normals_conventions.md`` §2), facing the camera: dot(normal, ray) < 0. The floor seen by a
  level camera is (0, -1, 0).

Intrinsics: NYUv2's (fx 518.86, fy 519.47, cx 325.58, cy 253.74 at 640x480), scaled so that the 640x480
frame covers the requested H x W and centre-cropped; pixels stay square and the field of view never
exceeds NYUv2's in either direction.

Determinism: the scene of sample i depends only on (seed, split, i); its image and labels additionally on
the resolution. Splits draw from different random streams, so train / val / test never share a scene.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from polymax.config.model import DatasetInfo
from polymax.data.sample import Sample
from polymax.data.synthetic_render import (
    BOX,
    CEILING,
    CYLINDER,
    FLOOR,
    SPHERE,
    WALL,
    Box,
    Camera,
    Cylinder,
    Material,
    Render,
    Scene,
    Sphere,
    camera_rotation,
    render_scene,
)
from polymax.errors import UserError

__all__ = [
    "SYNTH_INFO", "SYNTH_MIN_DEPTH", "SYNTH_MAX_DEPTH", "SyntheticScenes", "nyu_camera", "sample_scene",
    "render_sample", "FLOOR", "WALL", "CEILING", "BOX", "SPHERE", "CYLINDER",
]

SYNTH_INFO = DatasetInfo(
    name="synth",
    class_names=("floor", "wall", "ceiling", "box", "sphere", "cylinder"),
    thing_classes=(BOX, SPHERE, CYLINDER),
    colors=((140, 100, 60), (170, 200, 230), (240, 240, 170), (220, 60, 60), (60, 180, 75), (70, 90, 220)),
    ignore_label=255,
    label_divisor=1000,
    max_thing_id=16,
)
# Rooms are at most 6.5 x 6.5 x 3.0 m (diagonal 9.7 m), and the camera keeps >= 0.5 m from the walls and
# >= 0.6 m from the objects (>= 0.47 m along the optical axis within the field of view), so every depth
# lies inside this range.
SYNTH_MIN_DEPTH = 0.1
SYNTH_MAX_DEPTH = 10.0

NYU_INTRINSICS = (518.8579, 519.4696, 325.5824, 253.7362)  # fx, fy, cx, cy at 640 x 480
NYU_SIZE = (480, 640)  # H, W
SPLITS = {"train": 0, "val": 1, "test": 2}
DEFAULT_NUM_SAMPLES = {"train": 1000, "val": 100, "test": 100}
MAX_OBJECTS = 5
# Objects are placed within this angle of the viewing direction (narrower than the field of view of
# any aspect ratio) so most of them are seen.
_PLACEMENT_HALF_ANGLE = math.radians(22.0)


def nyu_camera(
    *, height: int, width: int, position: tuple[float, float, float], yaw: float, pitch: float, roll: float
) -> Camera:
    """Camera with NYUv2 intrinsics rescaled to cover ``height`` x ``width`` (centre crop, square pixels)."""
    fx, fy, cx, cy = NYU_INTRINSICS
    scale = max(height / NYU_SIZE[0], width / NYU_SIZE[1])
    # Integer coordinates are pixel centres: a pixel edge sits at -0.5, so scale about that edge.
    crop_x = (NYU_SIZE[1] * scale - width) / 2
    crop_y = (NYU_SIZE[0] * scale - height) / 2
    return Camera(
        fx=fx * scale, fy=fy * scale,
        cx=(cx + 0.5) * scale - 0.5 - crop_x, cy=(cy + 0.5) * scale - 0.5 - crop_y,
        height=height, width=width, position=position,
        rotation=camera_rotation(yaw=yaw, pitch=pitch, roll=roll),
    )


def _hsv(rng: np.random.Generator, *, sat: tuple[float, float], val: tuple[float, float]) -> tuple[float, ...]:
    """Random colour (linear RGB) with a uniform hue and the given saturation / value ranges."""
    hue, s, v = rng.uniform(0, 1), rng.uniform(*sat), rng.uniform(*val)
    k = (np.array([5.0, 3.0, 1.0]) + hue * 6) % 6
    rgb = v - v * s * np.clip(np.minimum(k, 4 - k), 0, 1)
    return tuple(float(c) for c in rgb**2)  # display colour -> linear albedo (the renderer's gamma is 2)


def _room_materials(rng: np.random.Generator) -> tuple[Material, Material, Material]:
    floor_pattern = str(rng.choice(["planks", "tiles"]))
    floor_base = _hsv(rng, sat=(0.2, 0.6), val=(0.35, 0.7))
    floor = Material(
        color=floor_base, pattern=floor_pattern, pattern_color=tuple(0.35 * c for c in floor_base),
        pattern_scale=float(rng.uniform(0.15, 0.25) if floor_pattern == "planks" else rng.uniform(0.3, 0.6)),
    )
    wall = Material(color=_hsv(rng, sat=(0.05, 0.3), val=(0.7, 0.95)), grain=0.03)
    ceiling = Material(color=_hsv(rng, sat=(0.0, 0.08), val=(0.85, 0.98)), grain=0.02)
    return floor, wall, ceiling


def _object_material(rng: np.random.Generator) -> Material:
    color = _hsv(rng, sat=(0.45, 0.9), val=(0.45, 0.95))
    pattern = str(rng.choice(["plain", "plain", "stripes", "checker"]))
    return Material(color=color, pattern=pattern, pattern_color=tuple(0.5 * c for c in color),
                    pattern_scale=float(rng.uniform(0.08, 0.2)))


def _random_object(rng: np.random.Generator) -> tuple[Box | Sphere | Cylinder, float, float]:
    """An object centred at the origin, the radius of its footprint's bounding circle and its mid height."""
    center = (0.0, 0.0)
    kind = rng.integers(3)
    material = _object_material(rng)
    if kind == 0:
        size = (float(rng.uniform(0.4, 1.1)), float(rng.uniform(0.4, 1.1)), float(rng.uniform(0.3, 1.2)))
        box = Box(center=center, size=size, yaw=float(rng.uniform(0, math.pi)), material=material)
        return box, math.hypot(size[0], size[1]) / 2, size[2] / 2
    if kind == 1:
        radius = float(rng.uniform(0.22, 0.5))
        return Sphere(center=center, radius=radius, material=material), radius, radius
    radius = float(rng.uniform(0.15, 0.4))
    cylinder = Cylinder(center=center, radius=radius, height=float(rng.uniform(0.4, 1.4)),
                        yaw=float(rng.uniform(0, 2 * math.pi)), material=material)
    return cylinder, radius, cylinder.height / 2


def _place_objects(rng: np.random.Generator, *, size_x: float, size_y: float, camera: tuple[float, float, float],
                   yaw: float, pitch: float | None) -> list[tuple[Box | Sphere | Cylinder, float]]:
    """1-5 random objects and their mid heights: in front of the camera, inside the room, not overlapping,
    >= 0.6 m from the camera and, unless ``pitch`` is None, with their mid-height point within 20 degrees
    of the optical axis vertically (inside the field of view of a square image, half angle 24.8 deg)."""
    placed, footprints = [], []
    target = int(rng.integers(1, MAX_OBJECTS + 1))
    for _draw in range(target + 5):  # a few spare draws in case an object finds no free spot
        if len(placed) == target:
            break
        obj, radius, mid_height = _random_object(rng)
        for _attempt in range(30):
            angle = yaw + rng.uniform(-_PLACEMENT_HALF_ANGLE, _PLACEMENT_HALF_ANGLE)
            distance = rng.uniform(1.8, 4.8)
            center = (float(camera[0] + distance * math.cos(angle)), float(camera[1] + distance * math.sin(angle)))
            inside = abs(center[0]) + radius < size_x / 2 - 0.05 and abs(center[1]) + radius < size_y / 2 - 0.05
            clear = all(math.dist(center, c) > radius + r + 0.05 for c, r in footprints)
            in_view = pitch is None or abs(math.atan2(camera[2] - mid_height, distance) - pitch) < math.radians(20)
            if inside and clear and in_view and distance > radius + 0.6:
                placed.append((dataclasses.replace(obj, center=center), mid_height))
                footprints.append((center, radius))
                break
    return placed


def sample_scene(rng: np.random.Generator) -> tuple[Scene, dict[str, float | tuple[float, float, float]]]:
    """A random room and a camera pose inside it: (scene, {'position', 'yaw', 'pitch', 'roll'})."""
    size_x, size_y = float(rng.uniform(4.0, 6.5)), float(rng.uniform(4.0, 6.5))
    room_height = float(rng.uniform(2.4, 3.0))
    floor, wall, ceiling = _room_materials(rng)

    # Camera: near the wall behind it (as seen along its viewing direction), >= 0.5 m from every wall, so
    # most of the room lies ahead of it.
    yaw = float(rng.uniform(-math.pi, math.pi))
    forward = np.array([math.cos(yaw), math.sin(yaw)])
    side = np.array([-forward[1], forward[0]])
    limit = np.array([size_x / 2 - 0.5, size_y / 2 - 0.5])
    # How far the camera can go back from the room centre before hitting the 0.5 m margin.
    back_room = float(np.min(limit / np.maximum(np.abs(forward), 1e-6)))
    xy = -forward * rng.uniform(0.5, 0.95) * back_room + side * rng.uniform(-0.25, 0.25) * min(size_x, size_y)
    xy = np.clip(xy, -limit, limit)
    position = (float(xy[0]), float(xy[1]), float(rng.uniform(1.1, 1.7)))
    pose = {"position": position, "yaw": yaw, "pitch": math.radians(float(rng.uniform(0.0, 22.0))),
            "roll": math.radians(float(rng.uniform(-4.0, 4.0)))}

    objects = _place_objects(rng, size_x=size_x, size_y=size_y, camera=position, yaw=yaw, pitch=pose["pitch"])
    if not objects:
        # Rare (small room, high level camera): place them anywhere ahead and tilt the camera down to the first.
        # (1 scene in ~1500; in 50k scenes this second pass never came back empty, and an empty room would
        # still be a valid sample.)
        objects = _place_objects(rng, size_x=size_x, size_y=size_y, camera=position, yaw=yaw, pitch=None)
        if objects:
            first, mid_height = objects[0]
            distance = math.dist(first.center, position[:2])
            pose["pitch"] = min(math.atan2(position[2] - mid_height, distance), math.radians(25.0))
    objects = [obj for obj, _ in objects]

    light = (float(rng.uniform(-0.4, 0.4) * size_x), float(rng.uniform(-0.4, 0.4) * size_y), room_height - 0.3)
    scene = Scene(size_x=size_x, size_y=size_y, height=room_height, floor=floor, wall=wall, ceiling=ceiling,
                  objects=tuple(objects), light_position=light, light_intensity=float(rng.uniform(1.6, 2.6)),
                  ambient=float(rng.uniform(0.15, 0.3)))
    return scene, pose


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    # Distinct entropy tuples give independent streams, so splits are disjoint for any number of samples.
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS[split], index]))


def render_sample(*, seed: int, split: str, index: int, size: tuple[int, int],
                  noise: float = 2.0) -> tuple[Render, np.ndarray]:
    """Render sample ``index`` of ``split``: (float render, uint8 image (3, H, W) with pixel noise of
    standard deviation ``noise`` grey levels)."""
    rng = _rng(seed, split, index)
    scene, pose = sample_scene(rng)
    camera = nyu_camera(height=size[0], width=size[1], **pose)
    render = render_scene(scene, camera)
    image = render.image * np.float32(255.0)
    if noise > 0:
        # Triangular noise from the two nibbles of random bytes: 10x cheaper than rng.normal. The sum of
        # two uniform 0..15 integers minus 15 has standard deviation sqrt(2 * 255 / 12) ~= 6.52.
        raw = np.frombuffer(rng.bytes(image.size), dtype=np.uint8).reshape(image.shape)
        nibbles = (raw & 15).astype(np.float32) + (raw >> 4) - 15.0
        image += nibbles * np.float32(noise / math.sqrt(2 * 255 / 12))
    return render, np.clip(np.rint(image), 0, 255).astype(np.uint8)


class SyntheticScenes(torch.utils.data.Dataset):
    """Synthetic rooms as a data set of :class:`~polymax.data.sample.Sample`, rendered on access.

    split: 'train', 'val' or 'test' (disjoint random streams). size: (H, W) of every sample.
    num_samples: length (default 1000 for train, 100 otherwise). seed: selects a different family of
    scenes; sample i is a pure function of (seed, split, i, size).
    """

    def __init__(self, split: str = "train", size: tuple[int, int] = (129, 129), num_samples: int | None = None,
                 seed: int = 0) -> None:
        if split not in SPLITS:
            raise UserError(f"unknown split {split!r} for the synthetic scenes; use one of {sorted(SPLITS)}")
        height, width = (int(s) for s in size)
        if height < 1 or width < 1:
            raise UserError(f"synthetic scene size must be positive (H, W), got {tuple(size)}")
        num_samples = DEFAULT_NUM_SAMPLES[split] if num_samples is None else int(num_samples)
        if num_samples < 0:
            raise UserError(f"num_samples must be >= 0, got {num_samples}")
        self.split, self.size, self.num_samples, self.seed = split, (height, width), num_samples, int(seed)
        self.info = SYNTH_INFO

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> Sample:
        if index < 0:
            index += self.num_samples
        if not 0 <= index < self.num_samples:
            raise IndexError(f"sample {index} out of range for {self.num_samples} synthetic scenes")
        render, image = render_sample(seed=self.seed, split=self.split, index=index, size=self.size)
        semantic = torch.from_numpy(render.semantic)
        return Sample(
            image=torch.from_numpy(image),
            semantic=semantic,
            panoptic=semantic * SYNTH_INFO.label_divisor + torch.from_numpy(render.instance),
            depth=torch.from_numpy(render.depth),
            normals=torch.from_numpy(render.normals),
            name=f"synth_{self.split}_s{self.seed}_{index:06d}",
        )
