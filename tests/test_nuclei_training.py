"""A DSB-2018-style nuclei folder end to end: the zoo recipe reads it, a
model trains one step, exports, and the SavedModel takes an odd-sized
image and returns boxes, a foreground map and (`serving_instance_ids`) an
instance-id map of that size."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import kerasmtl as mtl
import zoo
from kerasmtl.layers.instance_masks import serving_instance_ids
from zoo.training import train_zoo_model
from zoo.vision import vision_data

TINY = {"widths": (4, 4, 4, 4), "fpn_channels": 4, "head_channels": 4}


def _write_nuclei_folder(root, count=3, size=(48, 80)):
    """`count` RGBA images of `size` (H, W), each with 3 disc nuclei."""
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[: size[0], : size[1]]
    for i in range(count):
        folder = root / f"img{i:02d}"
        (folder / "images").mkdir(parents=True)
        (folder / "masks").mkdir()
        image = np.full((*size, 4), 255, np.uint8)
        image[..., :3] = rng.integers(0, 40, (*size, 3))
        for k in range(3):
            cy, cx = 10 + 14 * k, 12 + 24 * k + i
            disc = (rows - cy) ** 2 + (cols - cx) ** 2 <= 36
            image[disc, :3] = 200
            Image.fromarray(disc.astype(np.uint8) * 255, mode="L").save(
                folder / "masks" / f"m{k}.png")
        Image.fromarray(image, mode="RGBA").save(folder / "images" / f"img{i:02d}.png")
    return root


def _recipe(tmp_path, **kwargs):
    _write_nuclei_folder(tmp_path / "stage1_train")
    return vision_data(str(tmp_path), batch_size=2, image_size=(64, 64),
                       dev_fraction=0.34, **kwargs)


def test_recipe_augments_nuclei_and_standardizes_each_image(tmp_path):
    data = _recipe(tmp_path)
    assert "augmented" in data.summary and data.model_kwargs["standardize"] is True
    # Nuclei are a few pixels wide: the segmentation head reads stride 2.
    assert data.model_kwargs["seg_stride"] == 2
    assert data.model_kwargs["test_time_flips"] == 4
    assert [t.upsample for t in data.tasks if t.name == "segmentation"] == [2]
    x, y = next(iter(data.train))
    assert x["image"].shape == (2, 64, 64, 3)
    assert int((y["detection"]["classes"].numpy() >= 0).sum()) >= 1


def test_recipe_reads_a_nuclei_folder_into_crops_with_all_boxes(tmp_path):
    # Without augmentation: the crop alone, so the padding is where it was.
    data = _recipe(tmp_path, augment=False, seg_stride=4)
    assert "augmented" not in data.summary and "seg_stride" not in data.model_kwargs
    assert [t.name for t in data.tasks] == ["detection", "segmentation"]
    assert data.model_kwargs["num_classes"] == 1 and data.model_kwargs["seg_classes"] == 2
    assert "nuclei folder" in data.summary and "2 train / 1 dev" in data.summary
    x, y = next(iter(data.train))
    assert x["image"].shape == (2, 64, 64, 3)
    # 48x80 images cropped to 64 wide: the third nucleus (centre x = 60 + i,
    # radius 6) may be cut but keeps pixels; 3 boxes per image either way.
    assert int((y["detection"]["classes"].numpy() == 0).sum()) == 6
    masks = y["segmentation"].numpy()
    assert set(np.unique(masks)) <= {-1, 0, 1} and (masks[:, 48:] == -1).all()


@pytest.mark.large  # ~30 s on 2 shared cores: tracing the train step and export
def test_one_step_export_and_serve_an_odd_sized_image(tmp_path):
    data = _recipe(tmp_path)
    keras.utils.set_random_seed(0)
    model = zoo.create_model("det_seg_resnet_fpn", tasks=data.tasks,
                             **{**data.model_kwargs, **TINY})
    model.compile(optimizer="adam")
    history = model.fit(data.train, epochs=1, steps_per_epoch=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()

    path = mtl.export.export_saved_model(model, tmp_path / "export")
    serve = tf.saved_model.load(path).signatures["serving_default"]
    image = np.random.default_rng(1).integers(0, 256, (1, 45, 77, 3), np.uint8)
    out = serve(image=tf.constant(image))
    assert out["segmentation"].shape == (1, 45, 77)
    assert out["detection_boxes"].shape == (1, data.model_kwargs["max_detections"], 4)
    boxes = out["detection_boxes_xyxy"].numpy()
    assert boxes[..., 0::2].max() <= 77 and boxes[..., 1::2].max() <= 45
    ids = serving_instance_ids(out).numpy()
    assert ids.shape == (1, 45, 77) and ids.max() <= int(out["num_detections"][0])
    # An instance only covers foreground pixels.
    assert not (ids[0] > 0)[out["segmentation"].numpy()[0] == 0].any()


@pytest.mark.large
def test_train_zoo_model_on_a_nuclei_folder(tmp_path):
    _write_nuclei_folder(tmp_path / "data")
    result = train_zoo_model("det_seg_resnet_fpn", str(tmp_path / "data"), epochs=1,
                             batch_size=16, export_dir=str(tmp_path / "export"),
                             print_fn=lambda _: None)
    serve = tf.saved_model.load(result["export_path"]).signatures["serving_default"]
    out = serve(image=tf.constant(np.zeros((1, 37, 51, 3), np.uint8)))
    assert out["segmentation"].shape == (1, 37, 51)
    assert serving_instance_ids(out).shape == (1, 37, 51)
