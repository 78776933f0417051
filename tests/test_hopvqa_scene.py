"""HopVQA scenes: deterministic, well-formed (nothing hidden, containers hold their groups) and rendered."""

from __future__ import annotations

import json

import numpy as np
import pytest

from turngym.envs.hopvqa.scene import (
    BACKGROUND,
    CATEGORIES,
    COLORS,
    CONTAINER_LABELS,
    CONTAINERS,
    RGB,
    SIZES,
    WORDS,
    Scene,
    generate_scene,
    label_box,
    render,
)

SEEDS = range(50)


@pytest.fixture(scope="module")
def scenes() -> list[Scene]:
    return [generate_scene(seed) for seed in SEEDS]


def disjoint(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]


def inside(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return b[0] <= a[0] and b[1] <= a[1] and a[2] <= b[2] and a[3] <= b[3]


def check_geometry(scene: Scene) -> None:
    frame = (0, 0, scene.size, scene.size)
    containers = [o for o in scene.objects if o.is_container]
    items = [o for o in scene.objects if not o.is_container]
    for o in scene.objects:
        assert o.box[2] > o.box[0] and o.box[3] > o.box[1] and inside(o.box, frame), o
    for i, a in enumerate(items):
        for b in items[i + 1 :]:
            grown = (a.box[0] - 2, a.box[1] - 2, a.box[2] + 2, a.box[3] + 2)  # a few pixels of gap
            assert disjoint(grown, b.box), (a, b)
    for i, a in enumerate(containers):
        for b in containers[i + 1 :]:
            assert disjoint(a.box, b.box), (a, b)
    for o in items:
        if o.container is None:
            assert all(disjoint(o.box, c.box) for c in containers), o
        else:
            assert inside(o.box, scene.get(o.container).box), o
    # A label printed below its object stays in the image and off every other object.
    for o in scene.objects:
        lab = label_box(o, scene.size)
        if lab is not None:
            assert inside(lab, frame), o
            assert all(disjoint(lab, p.box) for p in items if p.id != o.id and p.container != o.id), o


@pytest.mark.parametrize("seed", [0, 1, 7, 123, 99991])
def test_generation_and_render_are_deterministic(seed: int) -> None:
    a, b = generate_scene(seed), generate_scene(seed)
    assert a == b
    assert np.array_equal(render(a), render(b))
    assert generate_scene(seed, attempt=1) == generate_scene(seed, attempt=1) != a


def test_different_seeds_differ(scenes: list[Scene]) -> None:
    assert len({json.dumps(s.to_json()["objects"]) for s in scenes}) == len(scenes)
    assert not np.array_equal(render(scenes[0]), render(scenes[1]))


def test_counts_and_vocabulary(scenes: list[Scene]) -> None:
    assert len(CATEGORIES) >= 10 and len(COLORS) >= 8 and SIZES == ("small", "medium", "large")
    seen_categories, seen_colors = set(), set()
    for scene in scenes:
        assert 8 <= len(scene.objects) <= 30
        assert [o.id for o in scene.objects] == list(range(len(scene.objects)))
        for o in scene.objects:
            assert o.category in CATEGORIES or o.category in CONTAINERS
            assert o.color in COLORS and o.size in SIZES
            assert o.area == (o.box[2] - o.box[0]) * (o.box[3] - o.box[1])
            assert o.box[0] < o.center[0] < o.box[2] and o.box[1] < o.center[1] < o.box[3]
            seen_categories.add(o.category)
            seen_colors.add(o.color)
        containers = [o for o in scene.objects if o.is_container]
        assert 1 <= len(containers) <= 3
        for c in containers:
            assert c.container is None
            members = [o for o in scene.objects if o.container == c.id]
            assert 2 <= len(members) <= 6 and not any(m.is_container for m in members)
        assert all(o.container is None or scene.get(o.container).is_container for o in scene.objects)
    assert len(seen_categories & set(CATEGORIES)) >= 10
    assert seen_categories >= set(CONTAINERS)
    assert len(seen_colors) >= 8


def test_nothing_overlaps_or_leaves_the_image(scenes: list[Scene]) -> None:
    for scene in scenes:
        check_geometry(scene)


@pytest.mark.parametrize("size", [256, 384, 1024])
def test_other_image_sizes(size: int) -> None:
    for seed in range(10):
        scene = generate_scene(seed, size=size)
        assert scene.size == size and 8 <= len(scene.objects) <= 30
        check_geometry(scene)
        assert render(scene).shape == (size, size, 3)


def test_labels(scenes: list[Scene]) -> None:
    labeled = [sum(o.label is not None for o in s.objects if not o.is_container) for s in scenes]
    assert sum(n > 0 for n in labeled) >= 0.8 * len(scenes)
    items = sum(sum(not o.is_container for o in s.objects) for s in scenes)
    assert 0.2 <= sum(labeled) / items <= 0.5
    for scene in scenes:
        labels = [o.label for o in scene.objects if o.label is not None]
        assert len(labels) == len(set(labels)), "labels are unique within a scene"
        for o in scene.objects:
            if o.label is None:
                continue
            if o.is_container:
                assert o.label in CONTAINER_LABELS
            else:
                assert o.label in WORDS or (o.label.isdigit() and str(int(o.label)) == o.label and int(o.label) <= 99)
    assert any(o.label in WORDS for s in scenes for o in s.objects)
    assert any(o.is_container and o.label for s in scenes for o in s.objects)


def test_json_round_trip(scenes: list[Scene]) -> None:
    for scene in scenes[:10]:
        data = json.loads(json.dumps(scene.to_json()))
        assert Scene.from_json(data) == scene
        assert Scene.from_json(data).to_json() == scene.to_json()


def test_get() -> None:
    scene = generate_scene(3)
    assert all(scene.get(o.id) is o for o in scene.objects)
    with pytest.raises(KeyError):
        scene.get(len(scene.objects))


def test_render_draws_every_object(scenes: list[Scene]) -> None:
    for scene in scenes[:20]:
        img = render(scene)
        assert img.shape == (768, 768, 3) and img.dtype == np.uint8
        assert (img != np.array(BACKGROUND, np.uint8)).any(axis=2).mean() > 0.02
        for o in scene.objects:
            x0, y0, x1, y1 = o.box
            region = img[y0:y1, x0:x1]
            assert (region != np.array(BACKGROUND, np.uint8)).any(), o
            assert (region == np.array(RGB[o.color], np.uint8)).all(axis=2).any(), f"{o} not painted in its color"
