import time

import numpy as np
import pytest

from kerasmtl.data.vision.synthetic import _footprint, synthetic_shapes


def _tight_box(pixels):
    rows, cols = np.flatnonzero(pixels.any(1)), np.flatnonzero(pixels.any(0))
    return [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]


def test_footprints_by_hand():
    # Pixel centres at 0.5, 1.5, ...: the triangle's half width at row y is
    # (y + 0.5) / 2 around x = 2, the circle of radius 2 misses the corners.
    assert _footprint("triangle", 4).astype(int).tolist() == [
        [0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [1, 1, 1, 1]
    ]
    assert _footprint("circle", 4).astype(int).tolist() == [
        [0, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1], [0, 1, 1, 0]
    ]
    assert _footprint("square", 3).all()


def test_labels_agree_with_the_pixels():
    data = synthetic_shapes(40, image_size=(48, 64), max_objects=5, seed=3)
    assert data.class_names == ["circle", "square", "triangle"]
    assert data.images[0].shape == (48, 64, 3) and data.images[0].dtype == np.uint8
    counts = [len(b) for b in data.boxes]
    assert min(counts) >= 1 and max(counts) <= 5 and sum(counts) > 80
    for boxes, classes, mask, instances in zip(
        data.boxes, data.classes, data.masks, data.instance_masks
    ):
        assert instances.max() == len(boxes)
        assert ((mask == 0) == (instances == 0)).all()
        for k, (box, cls) in enumerate(zip(boxes, classes)):
            pixels = instances == k + 1
            assert box.tolist() == _tight_box(pixels)  # tight on visible pixels
            assert (mask[pixels] == cls + 1).all()  # mask class = class + 1
            assert pixels.sum() >= 2  # never hidden by more than half at once


def test_deterministic_by_seed_and_flat_without_texture():
    a = synthetic_shapes(5, image_size=32, seed=11)
    b = synthetic_shapes(5, image_size=32, seed=11)
    c = synthetic_shapes(5, image_size=32, seed=12)
    for x, y in zip(a.images + a.masks, b.images + b.masks):
        np.testing.assert_array_equal(x, y)
    assert not all(np.array_equal(x, y) for x, y in zip(a.images, c.images))
    flat = synthetic_shapes(20, image_size=32, seed=1, texture=False)
    for image, instances in zip(flat.images, flat.instance_masks):
        background = image[instances == 0]
        assert (background == background[0]).all()
        for k in range(1, instances.max() + 1):
            colour = image[instances == k]
            assert (colour == colour[0]).all()
            # Every shape stands out from its background.
            assert np.abs(colour[0].astype(int) - background[0]).sum() >= 120


def test_class_subset_sizes_and_empty_images():
    data = synthetic_shapes(30, image_size=32, classes=("triangle", "circle"),
                            max_objects=1, min_objects=0, min_size=10, max_size=12)
    assert data.mask_class_names == ["background", "triangle", "circle"]
    assert {len(b) for b in data.boxes} == {0, 1}
    boxes = np.concatenate(data.boxes)
    sides = np.concatenate([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]])
    # One object, never occluded: a frame of 10..12 px (an even triangle has
    # no pixel centre in its top row, so it can be one row shorter).
    assert sides.min() >= 9 and sides.max() <= 12
    assert set(np.concatenate(data.classes).tolist()) == {0, 1}
    assert max(m.max() for m in data.masks) == 2


def test_fast():
    start = time.perf_counter()
    data = synthetic_shapes(500, image_size=64)
    assert len(data) == 500
    # Well under a second on a quiet machine; the margin covers a loaded CI box.
    assert time.perf_counter() - start < 5.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"classes": ("circle", "star")}, r"`classes`.*'star'"),
        ({"classes": ()}, "`classes`"),
        ({"min_size": 20, "max_size": 40}, "max_size=40"),
        ({"min_size": 12, "max_size": 10}, "min_size <= max_size.*max_size=10"),
        ({"min_objects": 3, "max_objects": 2}, "min_objects=3"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        synthetic_shapes(2, image_size=32, **kwargs)
