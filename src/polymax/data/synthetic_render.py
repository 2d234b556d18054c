"""Vectorised ray caster for the built-in synthetic rooms (see :mod:`polymax.data.synthetic`).

One primary ray per pixel centre is intersected analytically with an axis-aligned room seen from inside
(floor, four walls, ceiling) and a few convex objects standing on the floor: yawed boxes (slab test),
spheres and vertical cylinders with a top cap. The nearest hit gives exact labels; a point light
(Lambertian diffuse with distance falloff and hard shadows) plus a hemispherical ambient term gives the
image, so brightness varies with surface orientation and distance.

Frames. World: metres, z up, floor at z = 0, room ``x in [-size_x/2, size_x/2]``, ``y in [-size_y/2,
size_y/2]``. Camera: x right, y down, z forward (the right-handed camera frame of NYUv2 / DSINE, see
``depth_normals_conventions.md`` §2); ``Camera.rotation`` maps camera-frame vectors to the world frame.
Pixel (row v, column u) has its centre at image coordinates (u, v), i.e. integer coordinates are pixel
centres (OpenCV convention), so its ray is ``((u - cx) / fx, (v - cy) / fy, 1)`` in the camera frame.
Because that ray has unit z, the hit parameter t *is* the depth along the optical axis.

Labels: depth = camera-frame z of the hit (metres, not ray length); normals = unit camera-frame normals
facing the camera (dot(normal, ray) < 0), e.g. the floor seen by a level camera has normal (0, -1, 0).

Arrays of rays are (3, N): row k is the k-th coordinate, so per-component arithmetic stays contiguous.
Everything runs in float32 (twice the speed of float64; depths stay exact to ~1e-6 relative). Texture noise
is an exact integer hash of lattice cells, not a floating-point sine hash, so it does not depend on libm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Semantic classes (contiguous). 0-2 are stuff (room surfaces), 3-5 are things (objects).
FLOOR, WALL, CEILING, BOX, SPHERE, CYLINDER = range(6)

_EPS = 1e-9


@dataclass(frozen=True)
class Material:
    """Linear-RGB albedo ``color`` (3 floats in [0, 1]) and a procedural pattern.

    pattern: 'plain' | 'stripes' | 'checker' | 'planks' | 'tiles'; the pattern mixes ``color`` with
    ``pattern_color`` at a period of ``pattern_scale`` metres. ``grain`` is the amplitude of fine
    per-texel brightness noise.
    """

    color: tuple[float, float, float]
    pattern: str = "plain"
    pattern_color: tuple[float, float, float] = (0.0, 0.0, 0.0)
    pattern_scale: float = 0.3
    grain: float = 0.06


@dataclass(frozen=True)
class Box:
    """Box standing on the floor: footprint centre (x, y), full sizes (sx, sy, sz), rotation about z."""

    center: tuple[float, float]
    size: tuple[float, float, float]
    yaw: float
    material: Material


@dataclass(frozen=True)
class Sphere:
    """Sphere resting on the floor (centre height = radius)."""

    center: tuple[float, float]
    radius: float
    material: Material


@dataclass(frozen=True)
class Cylinder:
    """Vertical cylinder standing on the floor; yaw only turns its texture."""

    center: tuple[float, float]
    radius: float
    height: float
    yaw: float
    material: Material


SceneObject = Box | Sphere | Cylinder
OBJECT_CLASS = {Box: BOX, Sphere: SPHERE, Cylinder: CYLINDER}


@dataclass(frozen=True)
class Scene:
    """A room (sizes in metres), its surface materials, objects (instance id = index + 1) and a point light."""

    size_x: float
    size_y: float
    height: float
    floor: Material
    wall: Material
    ceiling: Material
    objects: tuple[SceneObject, ...] = ()
    light_position: tuple[float, float, float] = (0.0, 0.0, 2.5)
    light_intensity: float = 2.0
    ambient: float = 0.25


@dataclass(frozen=True)
class Camera:
    """Pinhole camera: intrinsics in pixels for an ``height`` x ``width`` image, position (world, metres) and
    ``rotation`` (3x3, camera frame -> world frame; columns are the camera's right, down, forward axes)."""

    fx: float
    fy: float
    cx: float
    cy: float
    height: int
    width: int
    position: tuple[float, float, float]
    rotation: np.ndarray


@dataclass
class Render:
    """Outputs of :func:`render_scene` (numpy). image: float32 (3, H, W) RGB in [0, 1], display-encoded
    with gamma 2 (square root of linear radiance);
    semantic, instance: int64 (H, W) (instance 0 on room surfaces); depth: float32 (H, W) metres along the
    optical axis; normals: float32 (3, H, W) unit camera-frame normals facing the camera."""

    image: np.ndarray
    semantic: np.ndarray
    instance: np.ndarray
    depth: np.ndarray
    normals: np.ndarray


def camera_rotation(*, yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Camera-to-world rotation for a camera looking along world (cos yaw, sin yaw, 0), tilted down by
    ``pitch`` and rolled clockwise (as seen by the camera) by ``roll``; radians. All zero: level camera
    looking along +x."""
    forward = np.array([math.cos(yaw), math.sin(yaw), 0.0])
    down = np.array([0.0, 0.0, -1.0])
    right = np.cross(down, forward)
    level = np.stack([right, down, forward], axis=1)
    cp, sp = math.cos(pitch), math.sin(pitch)
    # Pitch about the camera x axis: forward turns towards down.
    tilt = np.array([[1.0, 0.0, 0.0], [0.0, cp, sp], [0.0, -sp, cp]])
    cr, sr = math.cos(roll), math.sin(roll)
    spin = np.array([[cr, -sr, 0.0], [sr, cr, 0.0], [0.0, 0.0, 1.0]])
    return level @ tilt @ spin


def camera_rays(camera: Camera) -> np.ndarray:
    """World-frame ray directions (3, H*W) float32, row-major over pixels, each with unit camera-frame z."""
    cols = (np.arange(camera.width, dtype=np.float32) - np.float32(camera.cx)) / np.float32(camera.fx)
    rows = (np.arange(camera.height, dtype=np.float32) - np.float32(camera.cy)) / np.float32(camera.fy)
    local = np.empty((3, camera.height, camera.width), dtype=np.float32)
    local[0] = cols[None, :]
    local[1] = rows[:, None]
    local[2] = 1.0
    return _f32(camera.rotation) @ local.reshape(3, -1)


def _f32(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


def _col(*values: float) -> np.ndarray:
    """A float32 column vector (3, 1) that broadcasts against (3, N) arrays."""
    return np.array(values, dtype=np.float32)[:, None]


def _safe(d: np.ndarray) -> np.ndarray:
    # Replace exact zeros by a tiny positive value so slab divisions give +-huge instead of nan.
    return np.where(np.abs(d) < _EPS, np.float32(_EPS), d)


def _room_exit(origin: np.ndarray, dirs: np.ndarray, scene: Scene) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distance (N,) to the room's inside surface from origin (3, 1), and masks (N,) of rays that leave
    through the floor / ceiling (z slab) and through an x wall (else a y wall)."""
    lo = _col(-scene.size_x / 2, -scene.size_y / 2, 0.0)
    hi = _col(scene.size_x / 2, scene.size_y / 2, scene.height)
    d = _safe(dirs)
    t_x, t_y, t_z = np.where(d > 0, hi - origin, lo - origin) / d
    t_wall = np.minimum(t_x, t_y)
    through_z = t_z <= t_wall
    return np.minimum(t_wall, t_z), through_z, t_x <= t_y


def _yaw_matrix(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return _f32([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])  # object -> world


def _hit_box(box: Box, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """Entry distance (N,) (inf on a miss) of rays origin (3, N or 1) + t dirs (3, N); slab test in the box frame."""
    to_local = _yaw_matrix(box.yaw).T
    o = to_local @ (origin - _col(box.center[0], box.center[1], box.size[2] / 2))
    inv_d = 1.0 / _safe(to_local @ dirs)
    half = _col(*box.size) / 2
    t1, t2 = (-half - o) * inv_d, (half - o) * inv_d
    t_near = np.minimum(t1, t2).max(axis=0)
    t_far = np.maximum(t1, t2).min(axis=0)
    return np.where((t_near <= t_far) & (t_near > 0), t_near, np.float32(np.inf))


def _hit_sphere(sphere: Sphere, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    ox, oy, oz = origin - _col(sphere.center[0], sphere.center[1], sphere.radius)
    dx, dy, dz = dirs
    a = dx * dx + dy * dy + dz * dz
    half_b = ox * dx + oy * dy + oz * dz
    c = ox * ox + oy * oy + oz * oz - np.float32(sphere.radius**2)
    disc = half_b * half_b - a * c
    t = (-half_b - np.sqrt(np.maximum(disc, 0.0))) / a
    return np.where((disc >= 0) & (t > 0), t, np.float32(np.inf))


def _hit_cylinder(cyl: Cylinder, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    ox, oy = origin[0] - np.float32(cyl.center[0]), origin[1] - np.float32(cyl.center[1])
    dx, dy, dz = dirs
    # Side: |(o + t d)_xy - c|^2 = r^2, entry root, hit height inside [0, h].
    a = np.maximum(dx * dx + dy * dy, np.float32(_EPS))
    half_b = ox * dx + oy * dy
    c = ox * ox + oy * oy - np.float32(cyl.radius**2)
    disc = half_b * half_b - a * c
    t_side = (-half_b - np.sqrt(np.maximum(disc, 0.0))) / a
    z_side = origin[2] + t_side * dz
    inf = np.float32(np.inf)
    t_side = np.where((disc >= 0) & (t_side > 0) & (z_side >= 0) & (z_side <= cyl.height), t_side, inf)
    # Top cap (the bottom cap lies on the floor and is never seen).
    t_cap = (np.float32(cyl.height) - origin[2]) / _safe(dz)
    cx, cy = ox + t_cap * dx, oy + t_cap * dy
    t_cap = np.where((t_cap > 0) & (cx * cx + cy * cy <= np.float32(cyl.radius**2)), t_cap, inf)
    return np.minimum(t_side, t_cap)


_HIT = {Box: _hit_box, Sphere: _hit_sphere, Cylinder: _hit_cylinder}


def _object_normal(obj: SceneObject, points: np.ndarray) -> np.ndarray:
    """Outward world normals (3, M) at surface points (3, M) of one object."""
    if isinstance(obj, Sphere):
        return (points - _col(obj.center[0], obj.center[1], obj.radius)) / np.float32(obj.radius)
    if isinstance(obj, Cylinder):
        rx, ry = points[0] - np.float32(obj.center[0]), points[1] - np.float32(obj.center[1])
        radial = np.maximum(np.sqrt(rx * rx + ry * ry), np.float32(_EPS))
        on_cap = np.abs(points[2] - np.float32(obj.height)) < np.abs(radial - np.float32(obj.radius))
        return np.stack([np.where(on_cap, 0.0, rx / radial), np.where(on_cap, 0.0, ry / radial),
                         on_cap.astype(np.float32)])
    # Box: the face is the axis where the local point is relatively closest to the half size.
    to_world = _yaw_matrix(obj.yaw)
    local = to_world.T @ (points - _col(obj.center[0], obj.center[1], obj.size[2] / 2))
    ratio = local / (_col(*obj.size) / 2)
    magnitude = np.abs(ratio)
    on_x = (magnitude[0] >= magnitude[1]) & (magnitude[0] >= magnitude[2])
    on_y = ~on_x & (magnitude[1] >= magnitude[2])
    normal_local = np.stack([on_x, on_y, ~on_x & ~on_y]).astype(np.float32) * np.sign(ratio)
    return to_world @ normal_local


def _object_texcoords(obj: SceneObject, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2-D texture coordinates (metres) in the object's own frame, so patterns move with the object."""
    if isinstance(obj, Sphere):
        return points[0] - np.float32(obj.center[0]), points[2]
    local = _yaw_matrix(obj.yaw).T @ (points - _col(obj.center[0], obj.center[1], 0.0))
    if isinstance(obj, Cylinder):
        return np.arctan2(local[1], local[0]) * np.float32(obj.radius), local[2]
    return local[0] + local[1], local[2]


def _hash(*cells: np.ndarray) -> np.ndarray:
    """Deterministic pseudo-random float32 in [0, 1) per integer lattice cell (exact integer arithmetic)."""
    acc = np.zeros(cells[0].shape, dtype=np.uint32)
    for prime, cell in zip((73856093, 19349663, 83492791), cells):
        acc ^= cell.astype(np.int32).view(np.uint32) * np.uint32(prime)
    acc ^= acc >> np.uint32(13)
    acc *= np.uint32(0x5BD1E995)
    acc ^= acc >> np.uint32(15)
    return (acc >> np.uint32(8)).astype(np.float32) * np.float32(2.0**-24)


def _fraction(x: np.ndarray) -> np.ndarray:
    return x - np.floor(x)


def _albedo(material: Material, u: np.ndarray, v: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Linear albedo (3, M) of a material at texture coordinates u, v (M,) and world points (3, M)."""
    s = np.float32(material.pattern_scale)
    if material.pattern == "stripes":
        mix = np.floor(u / s) % 2
    elif material.pattern == "checker":
        mix = (np.floor(u / s) + np.floor(v / s)) % 2
    elif material.pattern == "planks":
        # Boards along u with staggered joints; each board gets its own tone, joints are dark lines.
        board = np.floor(v / s)
        along = u / (4 * s) + 0.5 * _hash(board)
        mix = 0.7 * _hash(board, np.floor(along))
        mix = np.where((_fraction(v / s) < 0.06) | (_fraction(along) < 0.015), np.float32(1.0), mix)
    elif material.pattern == "tiles":
        grout = (_fraction(u / s) < 0.05) | (_fraction(v / s) < 0.05)
        mix = np.where(grout, np.float32(1.0), 0.25 * _hash(np.floor(u / s), np.floor(v / s)))
    else:
        mix = np.zeros_like(u)
    base = _col(*material.color)
    albedo = base + (_col(*material.pattern_color) - base) * mix[None]
    # Fine grain on a 2 cm lattice: breaks up flat colours without changing the mean.
    cells = np.floor(points * np.float32(50.0))
    grain = 1.0 + np.float32(material.grain) * (2.0 * _hash(cells[0], cells[1], cells[2]) - 1.0)
    return albedo * grain[None]


def _shadowed(scene: Scene, points: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """True (M,) where an object blocks the segment from a surface point (3, M) to the light."""
    origin = points + np.float32(1e-4) * normals
    to_light = _col(*scene.light_position) - origin  # t in (0, 1) lies between the point and the light
    blocked = np.zeros(points.shape[1], dtype=bool)
    for obj in scene.objects:
        blocked |= _HIT[type(obj)](obj, origin, to_light) < 1.0
    return blocked


def _set_columns(target: np.ndarray, index: np.ndarray, values: np.ndarray) -> None:
    # Row by row: 1-D fancy assignment is much faster than target[:, index] = values.
    for row in range(target.shape[0]):
        target[row, index] = values[row]


def render_scene(scene: Scene, camera: Camera, *, shadows: bool = True) -> Render:
    """Ray-cast ``scene`` from ``camera``: exact per-pixel-centre labels and a shaded image (no noise)."""
    height, width = camera.height, camera.width
    origin = _col(*camera.position)
    dirs = camera_rays(camera)  # (3, N)
    count = dirs.shape[1]

    depth, through_z, through_x = _room_exit(origin, dirs, scene)
    owner = np.zeros(count, dtype=np.int64)  # 0 = room surface, k = object k (its instance id)
    for index, obj in enumerate(scene.objects, start=1):
        t = _HIT[type(obj)](obj, origin, dirs)
        closer = t < depth
        depth = np.minimum(t, depth)
        owner[closer] = index
    points = origin + dirs * depth[None]  # (3, N) world hit points

    # Room surfaces: inward normals along the exit axis; the ray's sign tells floor from ceiling etc.
    semantic = np.where(through_z, np.where(dirs[2] < 0, FLOOR, CEILING), WALL)
    normals = np.zeros((3, count), dtype=np.float32)
    normals[2] = np.where(through_z, -np.sign(dirs[2]), 0.0)
    walls = ~through_z
    normals[0] = np.where(walls & through_x, -np.sign(dirs[0]), 0.0)
    normals[1] = np.where(walls & ~through_x, -np.sign(dirs[1]), 0.0)
    albedo = np.empty((3, count), dtype=np.float32)
    for cls, material in ((FLOOR, scene.floor), (WALL, scene.wall), (CEILING, scene.ceiling)):
        index = np.flatnonzero((semantic == cls) & (owner == 0))
        p = np.take(points, index, axis=1)
        # Walls: u runs along the wall (x + y covers both wall orientations), v is height.
        u, v = (p[0] + p[1], p[2]) if cls == WALL else (p[0], p[1])
        values = _albedo(material, u, v, p)
        if cls == WALL:  # a darker skirting board marks where the walls meet the floor
            values *= np.where(p[2] < 0.08, np.float32(0.45), np.float32(1.0))[None]
        _set_columns(albedo, index, values)
    for index, obj in enumerate(scene.objects, start=1):
        pixels = np.flatnonzero(owner == index)
        if pixels.size == 0:
            continue
        p = np.take(points, pixels, axis=1)
        semantic[pixels] = OBJECT_CLASS[type(obj)]
        _set_columns(normals, pixels, _object_normal(obj, p))
        _set_columns(albedo, pixels, _albedo(obj.material, *_object_texcoords(obj, p), p))
    # Guard: make every normal face the camera (room surfaces and convex objects already do).
    facing = normals[0] * dirs[0] + normals[1] * dirs[1] + normals[2] * dirs[2]
    normals *= np.where(facing > 0, np.float32(-1.0), np.float32(1.0))[None]

    # Shading: hemispherical ambient (up-facing brighter) + Lambertian point light with falloff.
    lx, ly, lz = _col(*scene.light_position) - points
    distance_sq = lx * lx + ly * ly + lz * lz
    cosine = np.maximum((normals[0] * lx + normals[1] * ly + normals[2] * lz) / np.sqrt(distance_sq), 0.0)
    direct = np.float32(scene.light_intensity) * cosine / (1.0 + distance_sq / np.float32(2.5**2))
    if shadows and scene.objects:
        lit = np.flatnonzero(cosine > 0)
        blocked = _shadowed(scene, np.take(points, lit, axis=1), np.take(normals, lit, axis=1))
        direct[lit[blocked]] = 0.0
    light = np.float32(scene.ambient) * (0.75 + 0.25 * normals[2]) + direct
    image = np.sqrt(np.clip(albedo * light[None], 0.0, 1.0))  # gamma 2 display encoding

    normals_cam = _f32(camera.rotation).T @ normals
    # Renormalise: float32 hit points put sphere normals (p - c) / r up to ~1e-5 off unit length.
    normals_cam /= np.sqrt((normals_cam * normals_cam).sum(0))[None]
    return Render(
        image=image.reshape(3, height, width),
        semantic=semantic.reshape(height, width).astype(np.int64),
        instance=owner.reshape(height, width),
        depth=depth.reshape(height, width),
        normals=normals_cam.reshape(3, height, width),
    )
