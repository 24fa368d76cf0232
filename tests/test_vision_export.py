"""SavedModel export of a detection + segmentation model: the uint8 image
signature (any size, gray and RGBA), cropping back to the input size, and the
numbers against the in-process model."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasmtl as mtl
import zoo
from kerasmtl.layers.instance_masks import serving_instance_ids

TINY = {"widths": (4, 4, 4, 4), "fpn_channels": 4, "head_channels": 4,
        "max_detections": 8, "score_threshold": 0.0}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = zoo.create_model("det_seg_resnet_fpn", **TINY)
    path = mtl.export.export_saved_model(model, tmp_path_factory.mktemp("vision"))
    return model, tf.saved_model.load(path).signatures["serving_default"]


def _images(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_signature_takes_uint8_images_of_any_size(exported):
    model, signature = exported
    _, specs = signature.structured_input_signature
    assert list(specs) == ["image"]
    assert specs["image"].dtype == tf.uint8
    assert specs["image"].shape.as_list() == [None, None, None, None]
    images = _images((2, 50, 70, 3))
    out = signature(image=tf.constant(images))
    expected = {
        "segmentation": ([2, 50, 70], tf.int32),
        "segmentation_logits": ([2, 50, 70, 4], tf.float32),
        # The raw heat map, cropped to ceil(50 / 4) x ceil(70 / 4) cells.
        "detection": ([2, 13, 18, 7], tf.float32),
        "detection_boxes": ([2, 8, 4], tf.float32),
        "detection_boxes_xyxy": ([2, 8, 4], tf.float32),
        "detection_scores": ([2, 8], tf.float32),
        "detection_classes": ([2, 8], tf.int32),
        "num_detections": ([2], tf.int32),
    }
    assert {k: (v.shape.as_list(), v.dtype) for k, v in out.items()} == expected
    boxes = out["detection_boxes_xyxy"].numpy()
    assert boxes.min() >= 0 and boxes[..., 0::2].max() <= 70 and boxes[..., 1::2].max() <= 50
    # `detection_boxes` is the OD API's: [ymin, xmin, ymax, xmax] over the
    # request's 50 x 70 image (not the padded 64 x 96 one).
    np.testing.assert_allclose(out["detection_boxes"],
                               boxes[..., [1, 0, 3, 2]] / [50, 70, 50, 70], atol=1e-6)
    # The numbers: the model on the image zero-padded at the bottom and right
    # to 64 x 96, its image-shaped outputs cropped back.
    padded = np.zeros((2, 64, 96, 3), "float32")
    padded[:, :50, :70] = images
    raw = model.predict({"image": padded}, verbose=0)
    np.testing.assert_allclose(out["detection"], raw["detection"][:, :13, :18],
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out["segmentation_logits"],
                               raw["segmentation"][:, :50, :70], rtol=1e-4, atol=1e-4)


def test_gray_and_rgba_are_converted(exported):
    _, signature = exported
    gray = _images((1, 40, 33, 1), seed=1)
    from_gray = signature(image=tf.constant(gray))
    from_rgb = signature(image=tf.constant(np.repeat(gray, 3, axis=-1)))
    rgb = _images((1, 40, 33, 3), seed=2)
    rgba = np.concatenate([rgb, _images((1, 40, 33, 1), seed=3)], axis=-1)
    from_rgba = signature(image=tf.constant(rgba))
    from_rgb2 = signature(image=tf.constant(rgb))
    for key in from_rgb:
        np.testing.assert_array_equal(from_gray[key], from_rgb[key], err_msg=key)
        np.testing.assert_array_equal(from_rgba[key], from_rgb2[key], err_msg=key)
    assert from_gray["segmentation"].shape == (1, 40, 33)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"1 \(gray\).*4 \(RGBA\)"):
        signature(image=tf.zeros((1, 32, 32, 5), tf.uint8))


def test_divisible_image_matches_the_model(exported):
    model, signature = exported
    images = _images((2, 64, 96, 3), seed=4)
    got = {k: v.numpy() for k, v in signature(image=tf.constant(images)).items()}
    raw = model.predict({"image": images.astype("float32")}, verbose=0)
    expected = {"detection": raw["detection"], "segmentation_logits": raw["segmentation"]}
    expected.update({k: np.asarray(v) for k, v in model.postprocess(raw).items()})
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-4, atol=1e-4, err_msg=key)


def test_image_inputs_argument(tmp_path):
    image = keras.Input((None, None, 3), name="image")
    x = keras.layers.GlobalAveragePooling2D()(image)
    model = mtl.sharing.hard_sharing(image, x, [mtl.tasks.Regression("brightness")])
    # No ImageRescaling and a float input: served unchanged by default ...
    signature = tf.saved_model.load(
        mtl.export.export_saved_model(model, tmp_path / "plain")
    ).signatures["serving_default"]
    assert signature.structured_input_signature[1]["image"].dtype == tf.float32
    # ... and as uint8 images when named (no padding: no size multiple known).
    signature = tf.saved_model.load(
        mtl.export.export_saved_model(model, tmp_path / "named", image_inputs=["image"])
    ).signatures["serving_default"]
    out = signature(image=tf.fill((1, 5, 7, 1), tf.constant(10, tf.uint8)))
    assert signature.structured_input_signature[1]["image"].dtype == tf.uint8
    assert out["brightness"].shape == (1, 1)
    # The gray channel repeated to the model's 3, as float32.
    expected = model.predict(np.full((1, 5, 7, 3), 10.0, "float32"), verbose=0)
    np.testing.assert_allclose(out["brightness"], expected["brightness"], rtol=1e-5)
    with pytest.raises(ValueError, match=r"names \['photo'\].*inputs are \['image'\]"):
        mtl.export.export_saved_model(model, tmp_path / "bad", image_inputs=["photo"])
    assert not (tmp_path / "bad").exists()


def test_instance_masks_option_adds_instance_ids(tmp_path):
    keras.utils.set_random_seed(0)
    model = zoo.create_model("det_seg_resnet_fpn", **TINY)
    path = mtl.export.export_saved_model(model, tmp_path / "m", instance_masks=True)
    serve = tf.saved_model.load(path).signatures["serving_default"]
    out = serve(image=tf.constant(_images((1, 45, 77, 3))))
    ids = out["instance_ids"].numpy()
    assert out["instance_ids"].dtype == tf.int32 and ids.shape == (1, 45, 77)
    assert 0 <= ids.min() and ids.max() <= int(out["num_detections"][0])
    # An instance covers only foreground pixels (segmentation class > 0).
    assert not (ids[0] > 0)[out["segmentation"].numpy()[0] == 0].any()
    # The exported map is `serving_instance_ids` of the signature's own outputs.
    np.testing.assert_array_equal(ids, serving_instance_ids(out).numpy())


def test_instance_masks_option_needs_both_tasks(tmp_path):
    model = zoo.create_model("det_seg_resnet_fpn", tasks=[
        mtl.tasks.Detection("detection", 3, max_detections=8)], **{
            k: v for k, v in TINY.items() if k in ("widths", "fpn_channels")})
    with pytest.raises(ValueError, match=r"exactly one detection and one segmentation"):
        mtl.export.export_saved_model(model, tmp_path / "m", instance_masks=True)
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())


def _overlapping_boxes_model():
    """A tiny detection + segmentation model whose instance rules differ.

    An untrained model finds no foreground and draws zero-size boxes, where
    every rule gives the same (empty) map. Here every pixel is foreground and
    the boxes are 8 px wide, so that boxes overlap and the rules differ.
    """
    keras.utils.set_random_seed(0)
    model = zoo.create_model("det_seg_resnet_fpn", **TINY)
    classifier = model.get_layer("segmentation_classifier")
    kernel, bias = classifier.get_weights()
    bias[:] = -10.0
    bias[1] = 10.0
    classifier.set_weights([kernel, bias])
    size_output = model.get_layer("detection").branches[1][-1]  # heatmap, size, offset
    assert size_output.name == "size_output"
    kernel, bias = size_output.get_weights()
    size_output.set_weights([kernel, np.full_like(bias, 2.0)])
    return model


def _served(base_path):
    serve = tf.saved_model.load(str(base_path / "1")).signatures["serving_default"]
    return serve(image=tf.constant(_images((1, 45, 77, 3))))


def test_export_command_serves_instances_with_the_chosen_rule(tmp_path, capsys):
    from kerasmtl import cli

    model = _overlapping_boxes_model()
    model.save(str(tmp_path / "m.keras"))
    flags = ["--instance-min-score", "0.05", "--instance-overlap", "centre",
             "--instance-grow", "0.25"]
    assert cli.main(["export", str(tmp_path / "m.keras"), str(tmp_path / "served"),
                     "--instance-masks", *flags]) == 0
    out = _served(tmp_path / "served")
    expected = serving_instance_ids(out, min_score=0.05, overlap="centre", grow=0.25)
    np.testing.assert_array_equal(out["instance_ids"].numpy(), expected.numpy())
    # The check tells the rules apart: the default rule gives another map here,
    # so an export that dropped --instance-overlap/--instance-grow would fail.
    assert (expected.numpy() > 0).any()
    default = serving_instance_ids(out, min_score=0.05)
    assert not np.array_equal(default.numpy(), expected.numpy())
    # The instance flags without --instance-masks would do nothing: an error.
    capsys.readouterr()
    assert cli.main(["export", str(tmp_path / "m.keras"), str(tmp_path / "other"),
                     *flags]) == 2
    err = capsys.readouterr().err
    assert "--instance-min-score, --instance-overlap, --instance-grow only apply with " \
           "--instance-masks" in err, err
    assert not (tmp_path / "other").exists()


def test_export_of_a_preset_takes_the_instance_rule_from_its_card(tmp_path, capsys):
    from kerasmtl import cli
    from zoo import preset_writer

    recipe = zoo.registry.get_entry("det_seg_resnet_fpn").recipe
    assert recipe["export"] == {"instance_min_score": 0.3, "instance_overlap": "centre",
                                "instance_grow": 0.25}
    preset = preset_writer.save_preset(
        _overlapping_boxes_model(), tmp_path / "p", zoo_model="det_seg_resnet_fpn",
        data="test", command="test", dev_figures={}, print_fn=lambda *a: None)
    assert zoo.get_preset(preset).export_settings == recipe["export"]
    # No --instance-* flag: the card's rule.
    assert cli.main(["export", "--preset", str(preset), str(tmp_path / "a"),
                     "--instance-masks"]) == 0
    assert "the preset's settings where no flag is given" in capsys.readouterr().out
    out = _served(tmp_path / "a")
    card_rule = serving_instance_ids(out, min_score=0.3, overlap="centre", grow=0.25).numpy()
    np.testing.assert_array_equal(out["instance_ids"].numpy(), card_rule)
    assert not np.array_equal(card_rule, serving_instance_ids(out).numpy())
    # A flag given wins over the card; the card fills in the others.
    assert cli.main(["export", "--preset", str(preset), str(tmp_path / "b"),
                     "--instance-masks", "--instance-overlap", "score"]) == 0
    out = _served(tmp_path / "b")
    np.testing.assert_array_equal(
        out["instance_ids"].numpy(),
        serving_instance_ids(out, min_score=0.3, overlap="score", grow=0.25).numpy())


def test_a_bad_export_setting_is_refused_where_it_is_written():
    from zoo.registry import check_export_settings

    with pytest.raises(ValueError, match=r"recipe X: `export`: unknown keys \['instance_size'\]"):
        check_export_settings({"instance_size": 2}, "recipe X: `export`")
    with pytest.raises(ValueError, match="`overlap` must be one of"):
        check_export_settings({"instance_overlap": "area"}, "recipe X: `export`")
    with pytest.raises(ValueError, match=r"`instance_min_score` must be a number in \[0, 1\]"):
        check_export_settings({"instance_min_score": 2.0}, "recipe X: `export`")
