import numpy as np
import pytest

from kerasmtl.data.vision.augment import VisionAugment, crop_example, finalize_boxes
from kerasmtl.data.vision.synthetic import synthetic_shapes


def _tight_box(pixels):
    rows, cols = np.flatnonzero(pixels.any(1)), np.flatnonzero(pixels.any(0))
    return [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]


def _check_tight(augment, seeds, atol=0.0, image_size=48, cropped=False):
    """Augments synthetic shapes with their instance map as the mask and the
    instance index as the class, then checks that the box of every object
    left is the tight box of its pixels.

    With `cropped`, a box side on the crop border only has to enclose the
    pixels: a crop clips the box, and a non-rectangular object cut by the crop
    (a triangle's corner) may have no pixel on that border, or none at all."""
    data = synthetic_shapes(len(seeds), image_size=image_size, max_objects=4, seed=7)
    seen = set()
    for i, seed in enumerate(seeds):
        n = len(data.boxes[i])
        image, boxes, classes, mask = augment(
            data.images[i], data.boxes[i], np.arange(n), data.instance_masks[i],
            seed=(seed, 0),
        )
        boxes, classes, mask = boxes.numpy(), classes.numpy(), mask.numpy()
        assert image.shape[:2] == mask.shape
        assert set(np.unique(mask)) <= set(range(n + 1)) | {-1}
        seen.add(mask.shape)
        for box, k in zip(boxes, classes):
            if k < 0:
                assert box.tolist() == [0, 0, 0, 0]
                continue
            pixels = mask == k + 1
            border = np.isin(box, [0, mask.shape[1], mask.shape[0]]) & cropped
            if not pixels.any():
                assert border.any(), f"object {k} kept a box but lost its pixels"
                continue
            tight = np.array(_tight_box(pixels))
            np.testing.assert_allclose(box[~border], tight[~border], atol=atol)
            assert (box[:2] <= tight[:2] + atol).all()
            assert (box[2:] >= tight[2:] - atol).all()
        valid = classes >= 0  # padding rows come last
        assert not (valid[1:] & ~valid[:-1]).any()
    return seen


@pytest.mark.parametrize(
    "kwargs",
    [
        {"flip_horizontal": True, "flip_vertical": True},
        {"flip_horizontal": False, "rotate90": True},
    ],
)
def test_flips_and_rotations_keep_boxes_tight(kwargs):
    augment = VisionAugment(scale=None, **kwargs)
    _check_tight(augment, range(8), image_size=(48, 64))


def test_crops_keep_boxes_tight():
    augment = VisionAugment(scale=None, crop_size=(24, 32), rotate90=True)
    assert _check_tight(augment, range(8), cropped=True) == {(24, 32)}


def test_scale_keeps_boxes_tight_to_a_pixel():
    augment = VisionAugment(flip_horizontal=False, scale=(0.5, 1.5))
    sizes = _check_tight(augment, range(6), atol=1.0)
    assert len(sizes) > 1  # the sizes vary


def test_crop_by_hand():
    # 8x8 image; crop 4x4 at (y, x) = (4, 4): the first box falls outside and
    # becomes a padding row (moved last), the second is shifted by -4.
    boxes = np.array([[0, 0, 2, 2], [5, 5, 8, 8], [0, 0, 0, 0]], "float32")
    classes = np.array([0, 1, -1], "int32")
    mask = np.arange(64, dtype="int32").reshape(8, 8)
    image, boxes, classes, mask = crop_example(
        np.zeros((8, 8, 3)), boxes, classes, mask, (4, 4), (4, 4)
    )
    boxes, classes = finalize_boxes(boxes, classes, False)
    assert boxes.numpy().tolist() == [[1, 1, 4, 4], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert classes.numpy().tolist() == [1, -1, -1]
    assert mask.numpy()[0].tolist() == [36, 37, 38, 39]
    # A crop larger than the image pads the mask with -1 (bottom/right).
    _, _, _, mask = crop_example(np.zeros((2, 2, 3)), boxes, classes,
                                 np.zeros((2, 2), "int32"), (0, 0), (3, 3))
    assert mask.numpy().tolist() == [[0, 0, -1], [0, 0, -1], [-1, -1, -1]]


def test_missing_label_stays_missing():
    augment = VisionAugment(flip_vertical=True, rotate90=True, crop_size=(16, 16))
    boxes = np.full((3, 4), np.nan, "float32")
    for seed in range(3):
        _, out, classes, _ = augment(np.zeros((32, 40, 3), "uint8"), boxes,
                                     np.full(3, -1), np.zeros((32, 40)), seed=(seed, 1))
        assert np.isnan(out.numpy()).all() and (classes.numpy() == -1).all()


def test_photometric_changes_keep_gray_images_gray():
    gray = np.repeat(np.arange(64, dtype="uint8").reshape(8, 8, 1) * 3, 3, axis=-1)
    augment = VisionAugment(flip_horizontal=False, scale=None, brightness=0.2,
                            contrast=0.5)
    changed = False
    for seed in range(4):
        image = augment(gray, np.zeros((1, 4)), [-1], np.zeros((8, 8)),
                        seed=(seed, 3))[0].numpy()
        assert (image[..., 0] == image[..., 1]).all()
        assert (image[..., 0] == image[..., 2]).all()
        assert image.min() >= 0 and image.max() <= 255
        changed |= not np.allclose(image, gray)
    assert changed
    # Brightness alone shifts every pixel by the same amount (at most 0.2 * 255).
    flat = np.full((4, 4, 3), 100, "uint8")
    image = VisionAugment(flip_horizontal=False, scale=None, brightness=0.2)(
        flat, np.zeros((1, 4)), [-1], np.zeros((4, 4)), seed=(0, 0))[0].numpy()
    assert np.ptp(image) == 0 and abs(image[0, 0, 0] - 100) <= 51


def test_seeds_make_it_reproducible():
    augment = VisionAugment(rotate90=True, crop_size=(16, 16))
    data = synthetic_shapes(1, image_size=32, seed=2)
    args = (data.images[0], data.boxes[0], data.classes[0], data.masks[0])
    first = augment(*args, seed=(5, 6))
    np.testing.assert_array_equal(first[0], augment(*args, seed=(5, 6))[0])
    different = [augment(*args, seed=(s, 6))[0].numpy() for s in range(4)]
    assert any(not np.array_equal(first[0], d) for d in different)
    # Without a seed argument, draws come from the augmenter's own seed.
    a = VisionAugment(rotate90=True, crop_size=(16, 16), seed=9)
    b = VisionAugment(rotate90=True, crop_size=(16, 16), seed=9)
    np.testing.assert_array_equal(a(*args)[0], b(*args)[0])


def test_config_round_trip_and_bad_arguments():
    augment = VisionAugment(rotate90=True, scale=(0.5, 2), crop_size=(8, 16),
                            brightness=0.1, seed=3)
    again = VisionAugment.from_config(augment.get_config())
    assert again.get_config() == augment.get_config()
    assert again.scale == (0.5, 2.0) and again.crop_size == (8, 16)
    with pytest.raises(ValueError, match=r"`brightness`.*Received: brightness=2"):
        VisionAugment(brightness=2)
    with pytest.raises(ValueError, match=r"`scale`.*Received: scale=\(0, 1\)"):
        VisionAugment(scale=(0, 1))
    with pytest.raises(ValueError, match=r"`crop_size`.*crop_size=\(0, 4\)"):
        VisionAugment(crop_size=(0, 4))
