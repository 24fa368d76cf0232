"""tfds detection + segmentation loaders, on `tfds.testing.mock_data` only (no
downloads): the installed builders' features, and hand-made examples whose
boxes and masks are worked out by hand."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from kerasmtl.data.tabular.tfds import VOC_LABELS
from kerasmtl.data.vision.augment import VisionAugment
from kerasmtl.data.vision.tfds import (
    load_tfds_coco,
    load_tfds_oxford_iiit_pet,
    load_tfds_voc,
)


def hand_made(examples):
    def as_dataset(self, *args, **kwargs):
        return tf.data.Dataset.from_tensor_slices(examples)

    return tfds.testing.mock_data(as_dataset_fn=as_dataset)


def ragged_boxes(boxes):
    return tf.ragged.constant(boxes, dtype=tf.float32, ragged_rank=1, inner_shape=(4,))


def first_batch(load, examples, *args, **kwargs):
    with hand_made(examples):
        ds, info = load(*args, **kwargs)
        x, y = next(iter(ds))
    return x, y, info


def test_read_features_exist_in_the_installed_builders():
    with tfds.testing.mock_data(num_examples=1):
        voc = tfds.builder("voc/2007").info.features
        assert tuple(voc["objects"]["label"].names) == VOC_LABELS
        assert {"bbox", "is_difficult"} <= set(voc["objects"].keys())
        for config, key in (("2017", "objects"), ("2017_panoptic", "panoptic_objects")):
            coco = tfds.builder(f"coco/{config}").info.features
            assert {"bbox", "is_crowd", "label", "id"} <= set(coco[key].keys())
        assert coco["panoptic_objects"]["label"].num_classes == 133
        pet = tfds.builder("oxford_iiit_pet").info.features
        assert {"head_bbox", "segmentation_mask", "species", "file_name"} <= set(pet)
        assert pet["species"].names == ["Cat", "Dog"]


VOC_EXAMPLES = {
    "image": tf.zeros((2, 64, 96, 3), tf.uint8),
    "image/filename": tf.constant(["a.jpg", "b.jpg"]),
    "objects": {
        # [ymin, xmin, ymax, xmax] relative to the 64x96 image.
        "bbox": ragged_boxes([[[0.25, 0.5, 0.75, 1.0], [0.0, 0.0, 0.5, 0.25]], []]),
        "label": tf.ragged.constant([[11, 14], []], dtype=tf.int64),
        "is_difficult": tf.ragged.constant([[False, True], []], dtype=tf.bool),
    },
}


def test_voc_boxes_in_pixels_and_missing_masks():
    x, y, info = first_batch(
        load_tfds_voc, VOC_EXAMPLES, "train", batch_size=2, max_boxes=3, image_size=None
    )
    assert info["class_names"] == list(VOC_LABELS)
    assert info["mask_class_names"] == ["background", *VOC_LABELS]
    assert x["image"].shape == (2, 64, 96, 3) and x["image"].dtype == tf.float32
    np.testing.assert_allclose(
        y["detection"]["boxes"][0], [[48, 16, 96, 48], [0, 0, 24, 32], [0, 0, 0, 0]]
    )
    np.testing.assert_array_equal(y["detection"]["classes"], [[11, 14, -1], [-1] * 3])
    np.testing.assert_array_equal(y["detection"]["boxes"][1], 0)  # no objects
    np.testing.assert_array_equal(y["segmentation"], -1)  # tfds VOC has no masks


def test_voc_difficult_resize_task_names_and_unlabelled_test_split():
    x, y, _ = first_batch(
        load_tfds_voc,
        VOC_EXAMPLES,
        "train",
        batch_size=2,
        max_boxes=2,
        image_size=(32, 64),
        skip_difficult=True,
        detection="boxes",
        segmentation=None,
    )
    assert x["image"].shape == (2, 32, 64, 3) and set(y) == {"boxes"}
    # Resized by (64/96, 32/64): the difficult person is gone.
    np.testing.assert_allclose(y["boxes"]["boxes"][0], [[32, 8, 64, 24], [0, 0, 0, 0]])
    np.testing.assert_array_equal(y["boxes"]["classes"][0], [11, -1])
    _, y, _ = first_batch(
        load_tfds_voc,
        VOC_EXAMPLES,
        "test",
        year="2012",
        batch_size=2,
        max_boxes=2,
        image_size=None,
    )
    assert np.isnan(y["detection"]["boxes"]).all()  # VOC 2012 test: no labels
    np.testing.assert_array_equal(y["detection"]["classes"], -1)


def test_coco_panoptic_semantic_mask_and_thing_boxes():
    segment = np.zeros((2, 32, 32, 3), "uint8")
    segment[0, :16] = [1, 2, 0]  # id 1 + 2 * 256 = 513: label 120 (stuff)
    segment[0, 16:, :8] = [7, 0, 0]  # id 7: label 3 (a thing)
    # The rest of image 0 is void (id 0); image 1 has an unknown id 9.
    segment[1] = [9, 0, 0]
    examples = {
        "image": tf.zeros((2, 32, 32, 3), tf.uint8),
        "image/filename": tf.constant(["p.jpg", "q.jpg"]),
        "panoptic_image": tf.constant(segment),
        "panoptic_objects": {
            "id": tf.ragged.constant([[513, 7], []], dtype=tf.int64),
            "label": tf.ragged.constant([[120, 3], []], dtype=tf.int64),
            "bbox": ragged_boxes([[[0, 0, 0.5, 1], [0.5, 0, 1, 0.25]], []]),
            "is_crowd": tf.ragged.constant([[False, False], []], dtype=tf.bool),
        },
    }
    _, y, info = first_batch(
        load_tfds_coco,
        examples,
        "validation",
        config="2017_panoptic",
        batch_size=2,
        max_boxes=2,
        image_size=None,
    )
    assert len(info["class_names"]) == 80 and len(info["mask_class_names"]) == 134
    expected = np.full((2, 32, 32), -1)
    expected[0, :16] = 121
    expected[0, 16:, :8] = 4
    np.testing.assert_array_equal(y["segmentation"], expected)
    np.testing.assert_allclose(
        y["detection"]["boxes"][0], [[0, 16, 8, 32], [0, 0, 0, 0]]
    )
    np.testing.assert_array_equal(y["detection"]["classes"], [[3, -1], [-1, -1]])


def test_coco_crowd_boxes_and_unlabelled_test_split():
    examples = {
        "image": tf.zeros((1, 32, 64, 3), tf.uint8),
        "image/filename": tf.constant(["c.jpg"]),
        "objects": {
            "bbox": ragged_boxes([[[0, 0, 1, 0.5], [0, 0.5, 0.5, 1]]]),
            "label": tf.ragged.constant([[0, 5]], dtype=tf.int64),
            "is_crowd": tf.ragged.constant([[True, False]], dtype=tf.bool),
        },
    }
    _, y, info = first_batch(
        load_tfds_coco, examples, "train", max_boxes=2, image_size=None
    )
    assert len(info["class_names"]) == 80
    np.testing.assert_allclose(
        y["detection"]["boxes"][0], [[32, 0, 64, 16], [0, 0, 0, 0]]
    )
    np.testing.assert_array_equal(y["detection"]["classes"], [[5, -1]])
    np.testing.assert_array_equal(y["segmentation"], -1)
    _, y, _ = first_batch(
        load_tfds_coco,
        examples,
        "train",
        skip_crowd=False,
        max_boxes=2,
        image_size=None,
    )
    np.testing.assert_array_equal(y["detection"]["classes"], [[0, 5]])
    _, y, _ = first_batch(
        load_tfds_coco, examples, "test", max_boxes=2, image_size=None
    )
    assert np.isnan(y["detection"]["boxes"]).all()


PET_TRIMAP = np.full((2, 32, 32, 1), 2, "uint8")
PET_TRIMAP[:, 8:24, 8:24] = 3  # uncertain band
PET_TRIMAP[:, 10:22, 10:22] = 1  # pet
PET_EXAMPLES = {
    "image": tf.zeros((2, 32, 32, 3), tf.uint8),
    "file_name": tf.constant(["Bengal_1.jpg", "pug_2.jpg"]),
    "label": tf.constant([5, 25], tf.int64),
    "species": tf.constant([0, 1], tf.int64),
    "segmentation_mask": tf.constant(PET_TRIMAP),
    # The second image has no head annotation (all-zero box in tfds).
    "head_bbox": tf.constant([[0.25, 0.5, 0.5, 0.75], [0, 0, 0, 0]], tf.float32),
}


def test_pet_trimap_head_box_and_missing_label():
    _, y, info = first_batch(
        load_tfds_oxford_iiit_pet,
        PET_EXAMPLES,
        "train",
        batch_size=2,
        max_boxes=1,
        image_size=None,
    )
    assert info == {
        "class_names": ["Cat", "Dog"],
        "mask_class_names": ["background", "pet"],
    }
    expected = np.zeros((32, 32))
    expected[8:24, 8:24] = -1
    expected[10:22, 10:22] = 1
    np.testing.assert_array_equal(y["segmentation"], [expected, expected])
    np.testing.assert_allclose(y["detection"]["boxes"][0], [[16, 8, 24, 16]])
    np.testing.assert_array_equal(y["detection"]["classes"], [[0], [-1]])
    assert np.isnan(y["detection"]["boxes"][1]).all()
    _, y, info = first_batch(
        load_tfds_oxford_iiit_pet,
        PET_EXAMPLES,
        "train",
        classes="breed",
        mask_classes="classes",
        batch_size=2,
        max_boxes=1,
        image_size=None,
    )
    assert len(info["class_names"]) == 37 and len(info["mask_class_names"]) == 38
    assert y["segmentation"][0, 15, 15] == 6 and y["segmentation"][1, 15, 15] == 26
    np.testing.assert_array_equal(y["detection"]["classes"], [[5], [-1]])


def test_crop_shuffle_and_augment_keep_the_label_form():
    with hand_made(PET_EXAMPLES):
        ds, _ = load_tfds_oxford_iiit_pet(
            "train",
            batch_size=2,
            max_boxes=1,
            image_size=(32, 32),
            fit="crop",
            shuffle=4,
            seed=1,
            augment=VisionAugment(scale=None, seed=3),
        )
        x, y = next(iter(ds))
    assert x["image"].shape == (2, 32, 32, 3)
    assert y["segmentation"].shape == (2, 32, 32)
    assert y["detection"]["boxes"].shape == (2, 1, 4)
    # Shuffled: one image has its head box (or none, if cropped away), the
    # other keeps its missing label.
    boxes = y["detection"]["boxes"].numpy()
    assert np.isnan(boxes).all(axis=(1, 2)).sum() == 1
    assert set(y["detection"]["classes"].numpy()[:, 0].tolist()) <= {0, -1}
    assert set(np.unique(y["segmentation"])) <= {-1, 0, 1}  # trimap, maybe padded


def test_augmentation_is_redrawn_each_epoch_and_seeded():
    def epochs(count):
        with hand_made(PET_EXAMPLES):
            ds, _ = load_tfds_oxford_iiit_pet(
                "train",
                batch_size=2,
                max_boxes=1,
                image_size=None,
                augment=VisionAugment(scale=None, seed=3),  # a random h-flip
            )
        return [y["detection"]["boxes"].numpy()[0, 0].tolist() for _, y in ds.repeat(count)]

    first = epochs(6)
    assert first == epochs(6)  # the same seed, the same flips
    # The head box x 16..24 of the 32-wide image, flipped or not: both occur.
    assert set(map(tuple, first)) == {(16, 8, 24, 16), (8, 8, 16, 16)}


def test_bad_input_errors(capfd):
    too_many = {**VOC_EXAMPLES, "objects": {**VOC_EXAMPLES["objects"]}}
    with (
        hand_made(too_many),
        pytest.raises(
            tf.errors.InvalidArgumentError,
            match=r"image.*a.jpg.*has.*2.*boxes, more than max_boxes=1",
        ),
    ):
        next(iter(load_tfds_voc("train", max_boxes=1, image_size=None)[0]))
    wrong = {**PET_EXAMPLES, "segmentation_mask": tf.constant(PET_TRIMAP[:, :16])}
    with (
        hand_made(wrong),
        pytest.raises(
            tf.errors.InvalidArgumentError,
            match=r"sizes differ; mask:.*16 32.*image:.*32 32 3.*Bengal_1",
        ),
    ):
        next(iter(load_tfds_oxford_iiit_pet("train", max_boxes=1, image_size=None)[0]))
    flat = {
        **VOC_EXAMPLES,
        "objects": {
            **VOC_EXAMPLES["objects"],
            "bbox": ragged_boxes([[[0.25, 0.5, 0.25, 1.0], [0, 0, 0.5, 0.25]], []]),
        },
    }
    _, y, _ = first_batch(load_tfds_voc, flat, "train", max_boxes=2, image_size=None)
    np.testing.assert_array_equal(y["detection"]["classes"][0], [14, -1])
    message = "voc/2007: a.jpg: dropped 1 box(es) with zero or negative size."
    assert message in capfd.readouterr().err
    for kwargs, message in [
        ({"image_size": (30, 32)}, r"`image_size`.*multiples of 32"),
        ({"fit": "pad"}, r"Expected 'crop' or 'resize'"),
        ({"max_boxes": 0}, r"`max_boxes`. Expected an int >= 1"),
        ({"detection": None, "segmentation": None}, r"both None"),
    ]:
        with pytest.raises(ValueError, match=message):
            load_tfds_voc("train", **kwargs)
    with pytest.raises(ValueError, match=r"Expected '2007' or '2012'"):
        load_tfds_voc("train", year="2010")
    with pytest.raises(ValueError, match=r"`config`. Expected '2014', '2017'"):
        load_tfds_coco("train", config="2017_stuff")
    with pytest.raises(ValueError, match=r"Received: classes='cat'"):
        load_tfds_oxford_iiit_pet("train", classes="cat")
