"""Built-in synthetic scenes: determinism, label consistency, exact geometry and informative appearance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from polymax.data.sample import Sample
from polymax.data.synthetic import (
    SYNTH_INFO,
    SYNTH_MAX_DEPTH,
    SYNTH_MIN_DEPTH,
    SyntheticScenes,
    _rng,
    nyu_camera,
    sample_scene,
)
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
    Scene,
    Sphere,
    camera_rotation,
    render_scene,
)
from polymax.errors import UserError

GREY = Material(color=(0.5, 0.5, 0.5), grain=0.0)


def _camera_rays(camera: Camera) -> np.ndarray:
    """Camera-frame rays (3, H, W) through pixel centres, unit z."""
    v, u = np.meshgrid(np.arange(camera.height), np.arange(camera.width), indexing="ij")
    return np.stack([(u - camera.cx) / camera.fx, (v - camera.cy) / camera.fy, np.ones(u.shape)])


def _world_points(camera: Camera, depth: np.ndarray) -> np.ndarray:
    """Back-project depth (H, W) to world points (3, H, W)."""
    camera_points = _camera_rays(camera) * depth[None]
    world = np.asarray(camera.rotation) @ camera_points.reshape(3, -1) + np.array(camera.position)[:, None]
    return world.reshape(3, *depth.shape)


def _dataset_scene(index: int, size: tuple[int, int]) -> tuple[Scene, Camera]:
    scene, pose = sample_scene(_rng(0, "train", index))
    return scene, nyu_camera(height=size[0], width=size[1], **pose)


def test_info_and_constants():
    assert SYNTH_INFO.name == "synth"
    assert SYNTH_INFO.class_names[FLOOR] == "floor" and SYNTH_INFO.class_names[CYLINDER] == "cylinder"
    assert SYNTH_INFO.thing_classes == (BOX, SPHERE, CYLINDER)
    assert len(SYNTH_INFO.colors) == SYNTH_INFO.num_classes == 6
    assert len(set(SYNTH_INFO.colors)) == 6
    assert SYNTH_INFO.ignore_label == 255 and SYNTH_INFO.label_divisor == 1000
    assert 0 < SYNTH_MIN_DEPTH < SYNTH_MAX_DEPTH <= 10.0


def test_same_seed_gives_identical_samples_and_different_seeds_differ():
    first = SyntheticScenes(split="train", size=(33, 41), num_samples=4, seed=3)
    again = SyntheticScenes(split="train", size=(33, 41), num_samples=4, seed=3)
    other = SyntheticScenes(split="train", size=(33, 41), num_samples=4, seed=4)
    for index in range(4):
        a, b, c = first[index], again[index], other[index]
        for field in ("image", "semantic", "panoptic", "depth", "normals"):
            assert torch.equal(getattr(a, field), getattr(b, field)), field
        assert not torch.equal(a.depth, c.depth)
        assert not torch.equal(a.image, c.image)
    assert not torch.equal(first[0].depth, first[1].depth)
    # Reading out of order gives the same sample: no hidden state between calls.
    assert torch.equal(first[2].image, SyntheticScenes(split="train", size=(33, 41), num_samples=4, seed=3)[2].image)


def test_train_and_val_are_disjoint():
    train = SyntheticScenes(split="train", size=(17, 23), num_samples=12)
    val = SyntheticScenes(split="val", size=(17, 23), num_samples=12)
    train_depths = [train[i].depth for i in range(len(train))]
    for j in range(len(val)):
        assert not any(torch.equal(val[j].depth, depth) for depth in train_depths)


@pytest.mark.parametrize("size", [(17, 23), (65, 65), (96, 128), (40, 20)])
def test_any_resolution(size):
    dataset = SyntheticScenes(split="val", size=size, num_samples=2)
    sample = dataset[1]
    assert isinstance(sample, Sample)
    height, width = size
    assert sample.image.shape == (3, height, width) and sample.image.dtype == torch.uint8
    assert sample.semantic.shape == (height, width) and sample.semantic.dtype == torch.int64
    assert sample.panoptic.shape == (height, width) and sample.panoptic.dtype == torch.int64
    assert sample.depth.shape == (height, width) and sample.depth.dtype == torch.float32
    assert sample.normals.shape == (3, height, width) and sample.normals.dtype == torch.float32
    assert sample.name == "synth_val_s0_000001"


def test_labels_are_consistent():
    size = (48, 64)
    dataset = SyntheticScenes(split="train", size=size, num_samples=12)
    things = torch.tensor(SYNTH_INFO.thing_classes)
    seen_classes = set()
    for index in range(len(dataset)):
        sample = dataset[index]
        depth, normals, semantic, panoptic = sample.depth, sample.normals, sample.semantic, sample.panoptic
        assert (depth > SYNTH_MIN_DEPTH).all() and (depth <= SYNTH_MAX_DEPTH).all()
        torch.testing.assert_close(normals.norm(dim=0), torch.ones(size), atol=1e-5, rtol=0)
        assert torch.equal(semantic, panoptic // SYNTH_INFO.label_divisor)
        assert semantic.min() >= 0 and semantic.max() < SYNTH_INFO.num_classes
        instance = panoptic % SYNTH_INFO.label_divisor
        is_thing = torch.isin(semantic, things)
        assert (instance[is_thing] > 0).all() and (instance[~is_thing] == 0).all()
        assert instance.max() <= SYNTH_INFO.max_thing_id
        # One instance id never spans two classes.
        for instance_id in instance.unique()[1:]:
            assert semantic[instance == instance_id].unique().numel() == 1
        # Normals face the camera: negative dot product with the viewing ray of each pixel.
        scene, camera = _dataset_scene(index, size)
        rays = torch.from_numpy(_camera_rays(camera)).float()
        assert ((normals * rays).sum(0) < 0).all()
        seen_classes.update(semantic.unique().tolist())
    assert {FLOOR, WALL}.issubset(seen_classes) and seen_classes & set(SYNTH_INFO.thing_classes)


def test_every_scene_has_a_visible_object_of_reasonable_size():
    dataset = SyntheticScenes(split="train", size=(65, 65), num_samples=20)
    for index in range(len(dataset)):
        instance = dataset[index].panoptic % SYNTH_INFO.label_divisor
        assert (instance > 0).sum() >= 30, index


def test_nyu_intrinsics_scale_with_resolution():
    full = nyu_camera(height=480, width=640, position=(0.0, 0.0, 1.0), yaw=0.0, pitch=0.0, roll=0.0)
    assert (full.fx, full.fy, full.cx, full.cy) == pytest.approx((518.8579, 519.4696, 325.5824, 253.7362))
    half = nyu_camera(height=240, width=320, position=(0.0, 0.0, 1.0), yaw=0.0, pitch=0.0, roll=0.0)
    assert half.fx == pytest.approx(full.fx / 2) and half.fy == pytest.approx(full.fy / 2)
    assert half.cx == pytest.approx((full.cx + 0.5) / 2 - 0.5)
    # A square image keeps square pixels: a centre crop of the 4:3 frame.
    square = nyu_camera(height=129, width=129, position=(0.0, 0.0, 1.0), yaw=0.0, pitch=0.0, roll=0.0)
    assert square.fx / square.fy == pytest.approx(full.fx / full.fy)
    scale = 129 / 480
    assert square.fx == pytest.approx(full.fx * scale)
    assert square.cx == pytest.approx((full.cx + 0.5) * scale - 0.5 - (640 * scale - 129) / 2)
    assert square.cy == pytest.approx((full.cy + 0.5) * scale - 0.5)


def test_camera_rotation_axes():
    level = camera_rotation(yaw=0.0, pitch=0.0, roll=0.0)
    np.testing.assert_allclose(level, [[0, 0, 1], [-1, 0, 0], [0, -1, 0]], atol=1e-12)  # right, down, forward
    tilted = camera_rotation(yaw=0.3, pitch=0.2, roll=0.1)
    np.testing.assert_allclose(tilted.T @ tilted, np.eye(3), atol=1e-12)
    assert np.linalg.det(tilted) == pytest.approx(1.0)
    assert tilted[2, 2] == pytest.approx(-math.sin(0.2))  # a positive pitch looks down


def _empty_room(objects=(), light=(0.0, 0.0, 2.5)) -> Scene:
    return Scene(size_x=6.0, size_y=5.0, height=3.0, floor=GREY, wall=GREY, ceiling=GREY,
                 objects=tuple(objects), light_position=light)


def test_camera_facing_a_wall_sees_exact_depth_and_normal():
    # Level camera 1 m off the back wall looking along +x: the front wall at x = 3 is 5 m away, and with a
    # narrow field of view it fills the image, so depth (along the optical axis) is 5 m at every pixel.
    camera = Camera(fx=200.0, fy=200.0, cx=12.0, cy=8.0, height=17, width=25, position=(-2.0, 0.5, 1.5),
                    rotation=camera_rotation(yaw=0.0, pitch=0.0, roll=0.0))
    render = render_scene(_empty_room(), camera)
    assert (render.semantic == WALL).all() and (render.instance == 0).all()
    np.testing.assert_allclose(render.depth, 5.0, rtol=1e-6)
    np.testing.assert_allclose(render.normals, np.broadcast_to(np.array([0.0, 0.0, -1.0])[:, None, None],
                                                                (3, 17, 25)), atol=1e-6)
    # Yawed by 20 degrees (turned left) the centre ray still meets the front wall, 5 / cos(20 deg) away, and
    # the wall's camera-frame normal turns left: (-sin yaw, 0, -cos yaw).
    yaw = math.radians(20)
    camera = Camera(fx=200.0, fy=200.0, cx=12.0, cy=8.0, height=17, width=25, position=(-2.0, 0.5, 1.5),
                    rotation=camera_rotation(yaw=yaw, pitch=0.0, roll=0.0))
    render = render_scene(_empty_room(), camera)
    assert render.semantic[8, 12] == WALL
    assert render.depth[8, 12] == pytest.approx(5.0 / math.cos(yaw), rel=1e-6)
    np.testing.assert_allclose(render.normals[:, 8, 12], [-math.sin(yaw), 0.0, -math.cos(yaw)], atol=1e-6)


def test_level_camera_floor_normal_and_back_projection():
    camera = nyu_camera(height=36, width=48, position=(-2.0, 0.0, 1.4), yaw=0.1, pitch=0.0, roll=0.0)
    render = render_scene(_empty_room(), camera)
    floor = render.semantic == FLOOR
    assert floor[-1].all() and not floor[0].any()  # floor in the lower part of a level view
    np.testing.assert_allclose(render.normals[:, floor], np.array([[0.0], [-1.0], [0.0]]) * np.ones(floor.sum()),
                               atol=1e-6)
    # Camera y points down: floor points are exactly the camera height below the optical centre.
    camera_y = _camera_rays(camera)[1] * render.depth
    np.testing.assert_allclose(camera_y[floor], 1.4, rtol=1e-5)
    assert (render.semantic[render.normals[1] > 0.99] == CEILING).all()


def test_back_projected_labels_lie_on_their_surfaces():
    size = (40, 56)
    for index in range(6):
        scene, camera = _dataset_scene(index, size)
        render = render_scene(scene, camera)
        points = _world_points(camera, render.depth.astype(np.float64))
        world_normals = (np.asarray(camera.rotation) @ render.normals.reshape(3, -1)).reshape(3, *size)
        floor, ceiling, wall = (render.semantic == c for c in (FLOOR, CEILING, WALL))
        np.testing.assert_allclose(points[2][floor], 0.0, atol=1e-4)
        np.testing.assert_allclose(points[2][ceiling], scene.height, atol=1e-4)
        np.testing.assert_allclose(world_normals[2][floor], 1.0, atol=1e-5)
        on_wall = np.minimum(np.abs(np.abs(points[0]) - scene.size_x / 2), np.abs(np.abs(points[1]) - scene.size_y / 2))
        np.testing.assert_allclose(on_wall[wall], 0.0, atol=1e-4)
        for instance_id, obj in enumerate(scene.objects, start=1):
            mask = render.instance == instance_id
            p, n = points[:, mask], world_normals[:, mask]
            if isinstance(obj, Sphere):
                centre = np.array([obj.center[0], obj.center[1], obj.radius])[:, None]
                np.testing.assert_allclose(np.linalg.norm(p - centre, axis=0), obj.radius, atol=1e-4)
                np.testing.assert_allclose(n, (p - centre) / obj.radius, atol=1e-3)
            elif isinstance(obj, Cylinder):
                radial = np.hypot(p[0] - obj.center[0], p[1] - obj.center[1])
                on_side, on_cap = np.abs(radial - obj.radius) < 1e-4, np.abs(p[2] - obj.height) < 1e-4
                assert (on_side | on_cap).all()
                np.testing.assert_allclose(n[2][on_cap & ~on_side], 1.0, atol=1e-5)
            else:
                c, s = math.cos(obj.yaw), math.sin(obj.yaw)
                dx, dy = p[0] - obj.center[0], p[1] - obj.center[1]
                local = np.stack([c * dx + s * dy, -s * dx + c * dy, p[2] - obj.size[2] / 2])
                ratio = np.abs(local) / (np.array(obj.size)[:, None] / 2)
                assert (ratio <= 1 + 1e-4).all() and (np.abs(ratio.max(axis=0) - 1) < 1e-4).all()


def test_shading_follows_the_light():
    # A plain grey sphere lit from above-front: brightness rises with the cosine to the light.
    sphere = Sphere(center=(1.0, 0.0), radius=0.8, material=GREY)
    light = (0.0, 0.0, 2.5)
    camera = nyu_camera(height=48, width=64, position=(-1.5, 0.0, 1.0), yaw=0.0, pitch=0.1, roll=0.0)
    render = render_scene(_empty_room(objects=[sphere], light=light), camera)
    mask = render.instance == 1
    points = _world_points(camera, render.depth.astype(np.float64))[:, mask]
    normals = (np.asarray(camera.rotation) @ render.normals.reshape(3, -1))[:, mask.reshape(-1)]
    to_light = np.array(light)[:, None] - points
    cosine = (normals * to_light).sum(0) / np.linalg.norm(to_light, axis=0)
    brightness = render.image[:, mask].mean(0)
    assert np.corrcoef(np.maximum(cosine, 0), brightness)[0, 1] > 0.9
    # The floor under the sphere lies in its shadow: darker than without shadows, nowhere brighter.
    unshadowed = render_scene(_empty_room(objects=[sphere], light=light), camera, shadows=False)
    darker = render.image.mean(0) < unshadowed.image.mean(0) - 0.05
    assert darker.sum() > 20 and (render.semantic[darker] == FLOOR).all()
    assert (render.image <= unshadowed.image + 1e-6).all()


def test_appearance_separates_surfaces():
    # Within an image, room surfaces differ in mean colour (different materials and orientations to the
    # light), and textured floors are not flat colour.
    dataset = SyntheticScenes(split="train", size=(65, 65), num_samples=8)
    for index in range(len(dataset)):
        sample = dataset[index]
        image = sample.image.float()
        floor, wall = sample.semantic == FLOOR, sample.semantic == WALL
        gap = (image[:, floor].mean(1) - image[:, wall].mean(1)).abs().max()
        assert gap > 8, index
        assert image[:, floor].std(1).max() > 3, index
        things = sample.panoptic % 1000 > 0
        assert (image[:, things].mean(1) - image[:, wall].mean(1)).abs().max() > 8, index


def test_box_and_cylinder_yaw():
    box = Box(center=(1.0, 0.0), size=(1.0, 0.4, 0.8), yaw=math.radians(45), material=GREY)
    cylinder = Cylinder(center=(1.0, 1.2), radius=0.3, height=0.9, yaw=0.5, material=GREY)
    camera = nyu_camera(height=60, width=80, position=(-1.5, 0.3, 1.5), yaw=0.2, pitch=0.3, roll=0.05)
    render = render_scene(_empty_room(objects=[box, cylinder]), camera)
    assert {BOX, CYLINDER}.issubset(set(np.unique(render.semantic).tolist()))
    # A 45-degree yaw shows two vertical faces of the box: two distinct horizontal normal directions.
    world_normals = np.asarray(camera.rotation) @ render.normals[:, render.instance == 1]
    sides = np.round(world_normals[:2, np.abs(world_normals[2]) < 0.5], 3)
    assert len({tuple(v) for v in sides.T}) == 2


def test_dataset_errors_and_indexing():
    dataset = SyntheticScenes(split="val", size=(9, 9), num_samples=3)
    assert len(dataset) == 3
    assert torch.equal(dataset[-1].depth, dataset[2].depth)
    with pytest.raises(IndexError):
        dataset[3]
    assert len(SyntheticScenes(split="train")) == 1000 and len(SyntheticScenes(split="val")) == 100
    with pytest.raises(UserError, match="split"):
        SyntheticScenes(split="training")
    with pytest.raises(UserError, match="size"):
        SyntheticScenes(size=(0, 10))
