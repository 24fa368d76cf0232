import numpy as np
import pytest

from kerasmtl.data.vision.augment import VisionAugment
from kerasmtl.data.vision.container import VisionData
from kerasmtl.data.vision.pipeline import vision_dataset


def _image(height=64, width=64, value=0):
    return np.full((height, width, 3), value, "uint8")


def _data():
    """Two 64x64 images: one with two boxes and a mask, one with no
    detection label and no mask."""
    mask = np.zeros((64, 64), "int32")
    mask[10:20, 4:14] = 1
    return VisionData(
        [_image(value=10), _image(value=20)],
        [np.array([[4, 10, 14, 20], [30, 30, 40, 50]], "float32"), None],
        [np.array([0, 1]), None],
        [mask, None],
        class_names=["a", "b"],
        ids=["first", "second"],
    )


def _batch(ds):
    x, y = next(iter(ds))
    return x["image"].numpy(), {
        k: (v if not isinstance(v, dict) else {kk: vv.numpy() for kk, vv in v.items()})
        for k, v in y.items()
    }


# -- VisionData -------------------------------------------------------------------


def test_normalises_images_and_clips_boxes():
    gray = np.arange(12, dtype="uint8").reshape(3, 4)
    rgba = np.zeros((3, 4, 4), "uint8")
    rgba[..., 3] = 255
    instances = np.zeros((3, 4), "int32")
    instances[0, 0], instances[2, 3] = 1, 3  # box rows 0 and 2
    with pytest.warns(UserWarning, match=r"dropped 1 box\(es\).*1 image\(s\)"):
        data = VisionData(
            [gray, rgba],
            [np.array([[-2, 0, 1, 1], [9, 0, 12, 2], [3, 2, 4, 3]]), np.zeros((0, 4))],
            [np.array([0, 0, 0]), np.zeros(0, "int32")],
            class_names=["x"],
            instance_masks=[instances, None],
        )
    np.testing.assert_array_equal(data.images[0][..., 2], gray)
    assert data.images[1].shape == (3, 4, 3)
    # [-2, 0, 1, 1] is clipped to the image; [9, 0, 12, 2] lies right of it
    # (width 4) and is dropped; instance 3 becomes instance 2.
    assert data.boxes[0].tolist() == [[0, 0, 1, 1], [3, 2, 4, 3]]
    assert data.instance_masks[0][2, 3] == 2 and data.instance_masks[0][0, 0] == 1
    stack = data.instance_mask_stack(0)
    assert stack.shape == (2, 3, 4) and stack.sum() == 2 and stack[1, 2, 3]
    assert data.masks == [None, None] and data.boxes[1].shape == (0, 4)
    assert data.mask_class_names == ["background", "x"]


_BAD_INPUT = (
        ({"images": [np.zeros((4, 4, 3), "float32")]}, "dtype float32; expected uint8"),
        ({"images": [np.zeros((4, 4, 5), "uint8")]}, r"shape \(4, 4, 5\)"),
        ({"masks": [np.zeros((4, 5), "int32")]},
         r"shape \(4, 5\) but the image is \(4, 4\)"),
        ({"masks": [np.full((4, 4), 3)]}, r"values in \[3, 3\], outside \[-1, 1\]"),
        ({"masks": [np.zeros((4, 4), "float32")]}, "expected integer class ids"),
        ({"boxes": [np.array([[0, 0, 1, 1]])], "classes": [np.array([1])]},
         r"classes in \[1, 1\], outside \[0, 0\]"),
        ({"boxes": [np.array([[0, 0, np.nan, 1]])], "classes": [np.array([0])]},
         "non-finite box coordinates"),
        ({"boxes": [None], "classes": [np.array([0])]}, "has classes but boxes=None"),
        ({"boxes": [np.zeros((2, 4))], "classes": [np.array([0])]},
         r"boxes \(2, 4\) and classes \(1,\)"),
        ({"masks": [None, None]}, "`masks` has 2 entries for 1 images"),
        ({"ids": ["a", "b"]}, "`ids` has 2 entries for 1 images. Give one id"),
        ({"instance_masks": [np.full((4, 4), 2)], "boxes": [np.ones((1, 4))],
          "classes": [np.array([0])]}, "has id 2 but the image has 1 boxes"),
)


def test_bad_input():
    # One test for all cases: each test pays for a Keras session teardown.
    for kwargs, message in _BAD_INPUT:
        args = {"images": [np.zeros((4, 4, 3), "uint8")], "class_names": ["x"],
                "ids": ["img7"], **kwargs}
        with pytest.raises(ValueError, match=message):
            VisionData(**args)


def test_split_and_select():
    data = VisionData([_image(8, 8, i) for i in range(10)], ids=[f"i{i}" for i in range(10)])
    rest, held = data.split(0.3, seed=4)
    again = data.split(0.3, seed=4)[1]
    assert len(rest) == 7 and len(held) == 3 and held.ids == again.ids
    assert sorted(rest.ids + held.ids) == sorted(data.ids)
    assert rest.ids == sorted(rest.ids)  # original order kept
    assert held.ids != data.split(0.3, seed=5)[1].ids
    picked = data.select([3, 1])
    assert picked.ids == ["i3", "i1"] and picked.images[0][0, 0, 0] == 3
    with pytest.raises(ValueError, match=r"fraction.*Received: fraction=1.0"):
        data.split(1.0)


def test_stats_and_repr():
    data = _data()
    stats = data.stats()
    assert stats["boxes_per_class"] == {"a": 1, "b": 1}
    assert stats["missing_detection"] == 1 and stats["missing_masks"] == 1
    assert stats["image_sizes"] == {(64, 64): 2}
    assert repr(data) == (
        "VisionData(2 images, 2 boxes, classes=['a', 'b'], missing: 1 detection, "
        "1 masks)"
    )


# -- vision_dataset -------------------------------------------------------------------


def test_batches_follow_the_contract():
    image, labels = _batch(vision_dataset(_data(), batch_size=2, max_boxes=3))
    assert image.dtype == np.float32 and image.shape == (2, 64, 64, 3)
    assert image[0, 0, 0, 0] == 10.0 and image[1, 0, 0, 0] == 20.0
    det, seg = labels["detection"], labels["segmentation"].numpy()
    np.testing.assert_array_equal(
        det["boxes"][0], [[4, 10, 14, 20], [30, 30, 40, 50], [0, 0, 0, 0]]
    )
    assert det["classes"].tolist() == [[0, 1, -1], [-1, -1, -1]]
    assert np.isnan(det["boxes"][1]).all()  # missing detection label
    assert seg.dtype == np.int32 and seg.shape == (2, 64, 64)
    assert seg[0].sum() == 100 and (seg[1] == -1).all()  # missing mask


def test_one_task_only():
    _, labels = _batch(vision_dataset(_data(), batch_size=2, max_boxes=2,
                                      detection=None, segmentation="seg"))
    assert list(labels) == ["seg"] and labels["seg"].shape == (2, 64, 64)


def test_different_sizes_are_padded_to_a_multiple_of_32():
    data = VisionData(
        [_image(40, 70, 5), _image(20, 30, 6)],
        [np.array([[60, 30, 70, 40]]), np.zeros((0, 4))],
        [np.array([0]), np.zeros(0, "int32")],
        [np.ones((40, 70), "int32"), np.zeros((20, 30), "int32")],
        class_names=["a"],
    )
    image, labels = _batch(vision_dataset(data, batch_size=2, max_boxes=1))
    seg = labels["segmentation"].numpy()
    assert image.shape == (2, 64, 96, 3) and seg.shape == (2, 64, 96)
    assert (image[0, :40, :70] == 5).all() and (image[0, 40:] == 0).all()
    assert (seg[0, :40, :70] == 1).all() and (seg[0, :, 70:] == -1).all()
    assert (seg[1, :20, :30] == 0).all() and (seg[1, 20:] == -1).all()
    assert labels["detection"]["boxes"][0].tolist() == [[60, 30, 70, 40]]
    assert labels["detection"]["classes"].tolist() == [[0], [-1]]


def test_centre_crop_and_resize_by_hand():
    data = VisionData(
        [_image(64, 96)],
        [np.array([[0, 0, 20, 10], [40, 20, 50, 40]])],
        [np.array([1, 0])],
        [np.zeros((64, 96), "int32")],
        class_names=["a", "b"],
    )
    # Centre crop 64x64 of a 64x96 image: x offset 16. The first box keeps
    # x 16..20 -> [0, 0, 4, 10]; the second becomes [24, 20, 34, 40].
    _, labels = _batch(vision_dataset(data, batch_size=1, max_boxes=3,
                                      image_size=(64, 64)))
    assert labels["detection"]["boxes"][0, :2].tolist() == [[0, 0, 4, 10],
                                                             [24, 20, 34, 40]]
    # Resize 64x96 -> 32x32: x * 1/3, y * 1/2.
    image, labels = _batch(vision_dataset(data, batch_size=1, max_boxes=3,
                                          image_size=(32, 32), fit="resize"))
    assert image.shape == (1, 32, 32, 3)
    np.testing.assert_allclose(
        labels["detection"]["boxes"][0, :2], [[0, 0, 20 / 3, 5], [40 / 3, 10, 50 / 3, 20]],
        rtol=1e-6,
    )


def test_random_crops_drop_boxes_outside_and_are_reproducible():
    boxes = np.array([[0, 0, 8, 8], [88, 88, 96, 96]], "float32")
    data = VisionData([_image(96, 96)] * 6, [boxes] * 6, [np.array([0, 1])] * 6,
                      [np.zeros((96, 96), "int32")] * 6, class_names=["a", "b"])

    def run():
        ds = vision_dataset(data, batch_size=6, max_boxes=2, image_size=(32, 32),
                            shuffle=True, seed=3)
        return _batch(ds)[1]["detection"]

    first, second = run(), run()
    np.testing.assert_array_equal(first["boxes"], second["boxes"])
    # A 32x32 crop of a 96x96 image cannot hold parts of both corner boxes.
    assert ((first["classes"] >= 0).sum(axis=1) <= 1).all()
    assert (first["classes"][:, 1] == -1).all()  # padding rows at the end
    assert first["boxes"].min() >= 0 and first["boxes"].max() <= 32


def test_augmented_pipeline_keeps_missing_labels():
    data = _data()
    ds = vision_dataset(data, batch_size=2, max_boxes=2, image_size=(64, 64),
                        augment=VisionAugment(rotate90=True, seed=1), shuffle=True,
                        seed=0, repeat=True)
    for x, y in ds.take(3):
        boxes, classes = y["detection"]["boxes"].numpy(), y["detection"]["classes"]
        missing = np.isnan(boxes).all(axis=(1, 2))
        assert missing.sum() == 1 and not np.isnan(boxes[~missing]).any()
        assert (classes.numpy()[missing] == -1).all()
        assert x["image"].shape == (2, 64, 64, 3)


def test_shuffle_is_seeded():
    data = VisionData([_image(32, 32, i) for i in range(8)])
    first, second = (
        vision_dataset(data, batch_size=8, max_boxes=1, shuffle=True, seed=1)
        for _ in range(2)
    )

    def order(ds):
        return _batch(ds)[0][:, 0, 0, 0].tolist()

    epoch = order(first)
    assert epoch == order(second) and sorted(epoch) == list(range(8))
    assert order(first) != epoch  # reshuffled every epoch


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_boxes": 1}, r"Image 'first' has 2 boxes, more than max_boxes=1.*Raise"),
        ({"image_size": (48, 64)}, r"multiples of 32.*image_size=\(48, 64\)"),
        ({"detection": None, "segmentation": None}, "both None"),
        ({"fit": "stretch"}, "Expected 'crop' or 'resize'"),
        ({"batch_size": 0}, r"batch_size.*Received: batch_size=0"),
    ],
)
def test_pipeline_bad_input(kwargs, message):
    args = {"batch_size": 2, "max_boxes": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        vision_dataset(_data(), **args)


def test_mask_replaced_with_wrong_shape_is_caught():
    data = _data()
    data.masks[0] = np.zeros((32, 64), "int32")
    with pytest.raises(
        ValueError, match=r"'first' has shape \(32, 64\) but the image is \(64, 64\)"
    ):
        vision_dataset(data, batch_size=2, max_boxes=4)
