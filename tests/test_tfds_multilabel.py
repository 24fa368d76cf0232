"""tfds multi-label loaders, on `tfds.testing.mock_data` only (no downloads)."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.datasets.celeb_a import celeb_a_dataset_builder

from kerasmtl.data.tabular.tfds import (
    CELEB_A_ATTRIBUTES,
    VOC_LABELS,
    load_celeb_a_attributes,
    load_voc_image_labels,
)


def test_label_names_match_the_installed_tfds_builders():
    assert CELEB_A_ATTRIBUTES == tuple(celeb_a_dataset_builder.ATTR_HEADINGS)
    with tfds.testing.mock_data(num_examples=1):
        voc = tfds.builder("voc/2007")
        assert tuple(voc.info.features["objects"]["label"].names) == VOC_LABELS
        celeb = tfds.builder("celeb_a")
        assert set(celeb.info.features["attributes"].keys()) == set(CELEB_A_ATTRIBUTES)


def test_celeb_a_random_mock_labels_follow_the_raw_attributes():
    with tfds.testing.mock_data(num_examples=3):
        raw = list(tfds.load("celeb_a", split="train").take(3))
        ds = load_celeb_a_attributes("train", image_size=(8, 6), batch_size=2)
        batches = list(ds)
    x, y = batches[0]
    assert x["image"].shape == (2, 8, 6, 3) and x["image"].dtype == tf.float32
    assert y["attributes"].shape == (2, 40) and y["attributes"].dtype == tf.int32
    labels = np.concatenate([b[1]["attributes"].numpy() for b in batches])
    expected = [[int(ex["attributes"][a]) for a in CELEB_A_ATTRIBUTES] for ex in raw]
    np.testing.assert_array_equal(labels, expected)
    assert 0.0 <= float(tf.reduce_min(x["image"])) <= float(tf.reduce_max(x["image"])) <= 1.0


def hand_made(examples):
    def as_dataset(self, *args, **kwargs):
        return tf.data.Dataset.from_tensor_slices(examples)

    return tfds.testing.mock_data(as_dataset_fn=as_dataset)


def test_celeb_a_attribute_subset_in_the_given_order():
    attributes = {a: tf.constant([False, False]) for a in CELEB_A_ATTRIBUTES}
    attributes["Smiling"] = tf.constant([True, False])
    attributes["Male"] = tf.constant([False, True])
    images = tf.constant(np.full((2, 218, 178, 3), 255, dtype="uint8"))
    with hand_made({"image": images, "attributes": attributes}):
        ds = load_celeb_a_attributes(
            "test", attributes=["Male", "Smiling", "Young"], task_name="face"
        )
        x, y = next(iter(ds))
    np.testing.assert_array_equal(y["face"], [[0, 1, 0], [1, 0, 0]])
    assert x["image"].shape == (2, 218, 178, 3)  # native size by default
    np.testing.assert_allclose(x["image"], 1.0)
    with pytest.raises(ValueError, match=r"\['Happy'\] not CelebA attributes"):
        load_celeb_a_attributes("train", attributes=["Smiling", "Happy"])


def test_voc_random_mock_multi_hot_from_object_labels():
    with tfds.testing.mock_data(num_examples=3, num_sub_examples=4):
        raw = list(tfds.load("voc/2007", split="train").take(3))
        ds = load_voc_image_labels("train", image_size=(5, 7), batch_size=3)
        x, y = next(iter(ds))
    assert x["image"].shape == (3, 5, 7, 3) and y["labels"].shape == (3, 20)
    expected = np.zeros((3, 20), "int32")
    for i, ex in enumerate(raw):
        expected[i, ex["objects"]["label"].numpy()] = 1
    assert expected.sum() > 0
    np.testing.assert_array_equal(y["labels"], expected)


def test_voc_difficult_only_classes_can_be_unknown():
    # Image 0: a dog, a difficult dog, a difficult cat. Image 1: no objects.
    examples = {
        "image": tf.zeros((2, 4, 4, 3), tf.uint8),
        "objects": {
            "label": tf.ragged.constant([[11, 11, 7], []], dtype=tf.int64),
            "is_difficult": tf.ragged.constant([[False, True, True], []], dtype=tf.bool),
        },
    }
    expected = np.zeros((2, 20), "int32")
    expected[0, [7, 11]] = 1
    for difficult_as_unknown, cat in ((False, 1), (True, -1)):
        with hand_made(examples):
            ds = load_voc_image_labels(
                "validation", year="2012", image_size=(2, 2),
                difficult_as_unknown=difficult_as_unknown,
            )
            _, y = next(iter(ds))
        expected[0, 7] = cat
        np.testing.assert_array_equal(y["labels"], expected)


def test_invalid_arguments():
    with pytest.raises(ValueError, match=r"Expected '2007' or '2012'"):
        load_voc_image_labels("train", year="2010")
    with pytest.raises(ValueError, match=r"`image_size`.*Received: image_size=None"):
        load_voc_image_labels("train", image_size=None)
    with pytest.raises(ValueError, match=r"`image_size`.*or None"):
        load_celeb_a_attributes("train", image_size=(3,))
