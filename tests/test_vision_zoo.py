"""The det_seg zoo models: the training recipe's data function (shapes, a
COCO folder), single-task subsets, bad input, and the mAP report."""

import json

import keras
import numpy as np
import pytest

import zoo
from zoo.vision import det_seg_tasks, vision_data, vision_report

TINY = {"widths": (4, 4, 4, 4), "fpn_channels": 4, "head_channels": 4}


def test_shapes_recipe_gives_batches_and_a_seeded_dev_split():
    data = vision_data("shapes", batch_size=4, num_images=20, seed=3)
    assert data.model_kwargs == {"num_classes": 3, "seg_classes": 4, "max_boxes": 16,
                                 "max_detections": 16}
    assert [t.name for t in data.tasks] == ["detection", "segmentation"]
    assert data.summary.startswith("synthetic shapes 64x64: 16 train / 4 dev images")
    x, y = next(iter(data.dev))
    assert x["image"].shape == (4, 64, 64, 3)
    assert y["detection"]["boxes"].shape == (4, 16, 4)
    assert y["segmentation"].shape == (4, 64, 64)
    again = vision_data("shapes", batch_size=4, num_images=20, seed=3)
    np.testing.assert_array_equal(next(iter(again.dev))[0]["image"], x["image"])


def _write_coco_folder(root):
    from PIL import Image

    (root / "images").mkdir(parents=True)
    images, annotations = [], []
    for i in range(5):
        pixels = np.zeros((64, 64, 3), "uint8")
        pixels[8:24, 10:30] = 200  # one "box" object: x 10..30, y 8..24
        Image.fromarray(pixels).save(root / "images" / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": 64, "height": 64})
        annotations.append({
            "id": i + 1, "image_id": i + 1, "category_id": 7, "iscrowd": 0,
            "bbox": [10, 8, 20, 16],
            "segmentation": [[10, 8, 30, 8, 30, 24, 10, 24]], "area": 320})
    categories = [{"id": 7, "name": "box"}, {"id": 9, "name": "ball"}]
    (root / "annotations.json").write_text(json.dumps(
        {"images": images, "annotations": annotations, "categories": categories}))


def test_coco_folder_recipe(tmp_path):
    _write_coco_folder(tmp_path / "coco")
    data = vision_data(str(tmp_path / "coco"), batch_size=2, image_size=(64, 64))
    assert data.model_kwargs["num_classes"] == 2 and data.model_kwargs["seg_classes"] == 3
    assert "1 dev images" in data.summary and "['box', 'ball']" in data.summary
    x, y = next(iter(data.dev))
    assert x["image"].shape == (1, 64, 64, 3)
    np.testing.assert_allclose(y["detection"]["boxes"][0, 0], [10, 8, 30, 24])
    assert y["detection"]["classes"][0, :2].numpy().tolist() == [0, -1]
    mask = y["segmentation"][0].numpy()
    assert (mask[8:24, 10:30] == 1).all() and mask.sum() == 16 * 20


def test_unrecognised_data_spec(tmp_path):
    with pytest.raises(ValueError, match=r"--data 'circles' is not a vision data set.*"
                       r"'shapes'.*COCO folder.*DSB-2018"):
        vision_data("circles")
    with pytest.raises(ValueError, match=r"is not a vision data set"):
        vision_data(str(tmp_path))  # an empty folder


@pytest.mark.parametrize("keep", ["detection", "segmentation"])
def test_single_task_subsets(keep):
    tasks = [t for t in det_seg_tasks(3, head_channels=4) if t.name == keep]
    model = zoo.create_model("det_seg_resnet_fpn", tasks=tasks, **TINY)
    assert model.task_names == [keep]
    out = model.predict({"image": np.zeros((1, 32, 64, 3), "float32")}, verbose=0)
    assert tuple(out[keep].shape) == {"detection": (1, 8, 16, 7),
                                      "segmentation": (1, 32, 64, 4)}[keep]


@pytest.mark.parametrize("keep", [("detection", "segmentation"), ("segmentation",),
                                  ("detection",)])
def test_stride2_segmentation_decoder(keep, tmp_path):
    tasks = [t for t in det_seg_tasks(3, head_channels=4, seg_stride=2) if t.name in keep]
    model = zoo.create_model("det_seg_resnet_fpn", tasks=tasks, seg_stride=2, **TINY)
    names = [layer.name for layer in model.layers]
    # The decoder only exists where the segmentation head reads it.
    assert ("decoder_fuse_conv" in names) == ("segmentation" in keep)
    x = {"image": np.random.default_rng(0).integers(0, 255, (2, 64, 96, 3)).astype("uint8")}
    out = model.predict(x, verbose=0)
    if "segmentation" in keep:
        assert tuple(out["segmentation"].shape) == (2, 64, 96, 4)
    if "detection" in keep:
        assert tuple(out["detection"].shape) == (2, 16, 24, 7)
    # A .keras round trip keeps the decoder and its outputs.
    model.save(tmp_path / "m.keras")
    clone = keras.saving.load_model(tmp_path / "m.keras")
    for name, value in clone.predict(x, verbose=0).items():
        np.testing.assert_allclose(value, out[name], atol=1e-5)


def test_seg_stride_must_match_the_segmentation_task():
    with pytest.raises(ValueError, match=r"Task 'segmentation' upsamples by 2 but the "
                       r"model is built with seg_stride=4.*seg_stride=2"):
        zoo.create_model("det_seg_resnet_fpn", tasks=det_seg_tasks(3, seg_stride=2), **TINY)
    with pytest.raises(ValueError, match=r"`seg_stride`. Expected 4.*or 2.*Received: "
                       r"seg_stride=8"):
        zoo.create_model("det_seg_resnet_fpn", seg_stride=8, **TINY)


def test_image_size_not_divisible_by_32_is_a_clear_error():
    model = zoo.create_model("det_seg_resnet_fpn", **TINY)
    model.compile(optimizer="adam")
    x = {"image": np.zeros((2, 48, 64, 3), "float32")}
    y = {"detection": {"boxes": np.zeros((2, 16, 4), "float32"),
                       "classes": np.full((2, 16), -1, "int32")},
         "segmentation": np.zeros((2, 48, 64), "int32")}
    with pytest.raises(ValueError, match=r"height x width 48 x 64; both must be "
                       r"multiples of 32.*Pad or resize"):
        model.fit(x, y, epochs=1, verbose=0)


@pytest.mark.large
def test_vision_report_adds_map_and_the_cli_recipe_trains(tmp_path):
    from zoo.training import train_zoo_model

    data = vision_data("shapes", batch_size=8, num_images=24)
    keras.utils.set_random_seed(0)
    model = zoo.create_model("det_seg_resnet_fpn", **data.model_kwargs, **TINY)
    model.compile(optimizer="adam")
    report = vision_report(model, data.dev)
    assert {"map", "map_50", "map_75", "loss"} <= set(report["detection"])
    assert 0.0 <= report["detection"]["map_50"] <= 1.0
    assert "mean_iou" in report["segmentation"]
    lines = []
    result = train_zoo_model("det_seg_resnet_fpn", "shapes", epochs=1, batch_size=32,
                             export_dir=str(tmp_path / "export"), print_fn=lines.append)
    assert set(result["report"]) == {"detection", "segmentation"}
    assert (tmp_path / "export" / "1").is_dir()


@pytest.mark.parametrize("rep_grad", [False, True], ids=["equal", "dbmtl_rep_grad"])
def test_stride2_decoder_trains_on_unknown_image_sizes(rep_grad):
    # tf.data batches have no static height and width: the decoder's
    # upsampling must trace without them (fit, and the SavedModel export).
    # With a rep-grad balancer, the gradients w.r.t. both trunk outputs (the
    # FPN level and the stride-2 skip) are balanced.
    import tensorflow as tf

    from kerasmtl.weighting import DBMTL

    weighting = DBMTL(rep_grad=True) if rep_grad else None
    model = zoo.create_model("det_seg_resnet_fpn", seg_stride=2, weighting=weighting, **TINY)
    assert [f["layer"] for f in model.shared_features] == [
        "trunk_fpn_smooth_relu", "trunk_stem_relu"]
    model.compile(optimizer="adam")
    x = {"image": np.zeros((2, 64, 64, 3), "float32")}
    y = {"detection": {"boxes": np.zeros((2, 16, 4), "float32"),
                       "classes": np.full((2, 16), -1, "int32")},
         "segmentation": np.zeros((2, 64, 64), "int32")}
    signature = ({"image": tf.TensorSpec((None, None, None, 3), tf.float32)},
                 {"detection": {"boxes": tf.TensorSpec((None, 16, 4), tf.float32),
                                "classes": tf.TensorSpec((None, 16), tf.int32)},
                  "segmentation": tf.TensorSpec((None, None, None), tf.int32)})
    data = tf.data.Dataset.from_generator(lambda: iter([(x, y)]), output_signature=signature)
    history = model.fit(data, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
