"""The multi-label zoo models (`zoo/multilabel.py`), their data functions, and
the `--quick` run of `benchmarks/multilabel.py`."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import kerasmtl as mtl
import zoo
import zoo.multilabel as zm  # registers the models
from kerasmtl.layers.multilabel_heads import LabelAttentionHead
from zoo.training import load_training_data

REPO_ROOT = Path(__file__).resolve().parents[1]


def _linear_mlp(**kwargs):
    """A 2-feature, 2-label `multilabel_mlp` without hidden layers whose logits
    are the standardized features (kernel = identity)."""
    model = zoo.create_model("multilabel_mlp", num_features=2, hidden_units=(),
                             feature_mean=[1.0, -2.0], feature_variance=[4.0, 1.0],
                             **kwargs)
    model.get_layer("labels_logits").set_weights([np.eye(2), np.zeros(2)])
    return model


def test_cardinality_buckets():
    labels = [[0, 0, 0, 0], [1, 0, 1, 0], [1, 1, 1, 1], [1, -1, 0, 0],
              [1, 1, 1, -1], [-1, -1, -1, -1]]
    # 3 buckets: 0, 1, 2+; any unknown label makes the class unknown.
    assert zm.cardinality_buckets(labels, 3).tolist() == [0, 2, 2, -1, -1, -1]
    assert zm.cardinality_buckets(labels, 5).tolist() == [0, 2, 4, -1, -1, -1]
    with pytest.raises(ValueError, match="num_buckets.*Received: num_buckets=1"):
        zm.cardinality_buckets(labels, 1)
    with pytest.raises(ValueError, match=r"expects labels \(N, L\)"):
        zm.cardinality_buckets([1, 0, 1])


def test_mlp_standardizes_inside_and_is_logistic_regression_without_hidden_layers():
    model = _linear_mlp(labels=["cat", "dog"])
    # (3 - 1) / 2 = 1 and (-2 + 2) / 1 = 0 -> sigmoid(1), sigmoid(0).
    probs = model.predict(np.array([[3.0, -2.0]]), verbose=0)["labels"]
    np.testing.assert_allclose(probs, [[0.7310586, 0.5]], atol=1e-6)
    assert model.get_task("labels").labels == ["cat", "dog"]
    with pytest.raises(ValueError, match="both `feature_mean` and `feature_variance`"):
        zoo.create_model("multilabel_mlp", feature_mean=[0.0] * 16)


def test_mlp_task_subsets_and_extra_tasks():
    model = zoo.create_model("multilabel_mlp", hidden_units=(4,),
                             extra_tasks=[zm.cardinality_task(3)])
    assert model.task_names == ["labels", "cardinality"]
    out = model.predict(np.zeros((2, 16)), verbose=0)
    assert out["labels"].shape == (2, 8) and out["cardinality"].shape == (2, 3)
    # Single-task baselines, as zoo.training.compare_zoo_model builds them.
    for task in model.tasks:
        single = zoo.create_model("multilabel_mlp", hidden_units=(4,), tasks=[task])
        assert single.task_names == [task.name]


@pytest.mark.parametrize("name,tokens", [("multilabel_mlp", 1), ("multilabel_cnn", 16)])
def test_label_attention_head_variants(name, tokens):
    kwargs = {"hidden_units": (8,)} if name == "multilabel_mlp" else {
        "image_size": (16, 16), "filters": (4, 8), "dense_units": 8}
    model = zoo.create_model(name, head="label_attention",
                             head_config={"embed_dim": 8, "num_heads": 2},
                             extra_tasks=[zm.cardinality_task()], **kwargs)
    head = model.get_layer("labels_label_attention")
    assert isinstance(head, LabelAttentionHead)
    if name == "multilabel_cnn":
        # The CNN's label queries attend over the 4x4 map of its last block;
        # the other task reads the pooled vector.
        assert tuple(head.input.shape) == (None, tokens, 8)
        assert tuple(model.get_layer("cardinality").input.shape) == (None, 8)
        x = {"image": np.zeros((2, 16, 16, 3), "float32")}
    else:
        assert tuple(head.input.shape) == (None, 8)
        x = np.zeros((2, 16), "float32")
    out = model.predict(x, verbose=0)
    assert out["labels"].shape == (2, model.get_task("labels").num_labels)
    assert np.all((out["labels"] > 0) & (out["labels"] < 1))


def test_export_returns_probabilities_decisions_and_label_names(tmp_path):
    model = _linear_mlp(labels=["cat", "dog"])
    model.get_layer("labels").thresholds.assign([0.6, 0.4])  # as calibration would
    x = np.array([[1.4, -2.0], [3.0, -3.0]], "float32")
    # standardized: [0.2, 0] -> p [0.550, 0.5]; [1, -1] -> p [0.731, 0.269]
    path = mtl.export.export_saved_model(model, tmp_path / "export")
    serve = tf.saved_model.load(path).signatures["serving_default"]
    out = serve(features=tf.constant(x))
    np.testing.assert_allclose(out["labels"].numpy(), [[0.549834, 0.5], [0.731059, 0.268941]],
                               atol=1e-5)
    assert out["labels_prediction"].numpy().tolist() == [[0, 1], [1, 0]]
    assert out["labels_labels"].numpy().tolist() == [[b"", b"dog"], [b"cat", b""]]


def test_synthetic_shape_images_draw_what_they_label():
    images, labels = zm.synthetic_shape_images(40, (16, 20), seed=3)
    assert images.shape == (40, 16, 20, 3) and labels.shape == (40, len(zm.SHAPE_NAMES))
    # Background noise stays below 0.15; every shape is drawn at >= 0.5.
    drawn = images.max(axis=(1, 2, 3)) >= 0.5
    assert drawn.tolist() == labels.any(axis=1).tolist()
    # The generator lives in kerasmtl.data.vision; the zoo module uses it.
    from kerasmtl.data.vision import synthetic_shape_images

    again, _ = synthetic_shape_images(40, (16, 20), seed=3)
    np.testing.assert_array_equal(images, again)
    with pytest.raises(ValueError, match="at least 16"):
        zm.synthetic_shape_images(2, (8, 8))


def test_mlp_synthetic_data_is_multi_task_and_multi_label():
    data = load_training_data("multilabel_mlp", "synthetic")
    assert [t.name for t in data.tasks] == ["labels", "cardinality"]
    x, y = data.train
    assert x.shape == (2000, 16) and y["labels"].shape == (2000, 8)
    np.testing.assert_array_equal(y["cardinality"], zm.cardinality_buckets(y["labels"]))
    assert (y["labels"] == -1).any() and (data.dev[1]["labels"] >= 0).all()
    np.testing.assert_allclose(data.model_kwargs["feature_mean"], x.mean(axis=0), atol=1e-5)
    model = zoo.create_model("multilabel_mlp", tasks=data.tasks, hidden_units=(4,),
                             **data.model_kwargs)
    model.compile(optimizer="adam")
    logs = model.fit(x[:64], {k: v[:64] for k, v in y.items()}, epochs=1, verbose=0)
    assert np.isfinite(logs.history["loss"][0])
    with pytest.raises(ValueError, match="neither 'synthetic' nor a MULAN"):
        load_training_data("multilabel_mlp", "nowhere")


def test_mlp_mulan_folder(tmp_path):
    rows = [f"{i},{i % 3}.5,{10 - i},{i % 2},{int(i > 4)}" for i in range(10)]
    (tmp_path / "toy-train.arff").write_text(
        "@relation toy\n@attribute f1 numeric\n@attribute f2 numeric\n"
        "@attribute f3 numeric\n@attribute l1 {0,1}\n@attribute l2 {0,1}\n@data\n"
        + "\n".join(rows) + "\n")
    (tmp_path / "toy.xml").write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<labels xmlns="http://mulan.sourceforge.net/labels">'
        '<label name="l2"></label><label name="l1"></label></labels>\n')
    (tmp_path / "dev_split_seed0.txt").write_text("# dev rows\n0\n5\n")
    data = load_training_data("multilabel_mlp", str(tmp_path))
    x, y = data.train
    assert x.shape == (8, 3) and data.dev[0].shape == (2, 3)
    assert y["labels"][:, 1].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]  # rows 1-4, 6-9
    assert data.model_kwargs["labels"] == ["l1", "l2"]
    np.testing.assert_allclose(data.model_kwargs["feature_mean"][0], 5.0)  # mean of 1-4,6-9
    assert [t.name for t in data.tasks] == ["labels"]


def test_cnn_data_functions(tmp_path):
    data = load_training_data("multilabel_cnn", "synthetic")
    assert data.train[0]["image"].shape == (2000, 32, 32, 3)
    assert data.model_kwargs == {"image_size": (32, 32), "labels": list(zm.SHAPE_NAMES)}

    for i in range(3):
        image = np.full((8, 8, 3), 60 * i, "uint8")
        tf.io.write_file(str(tmp_path / f"{i}.png"), tf.io.encode_png(image))
    # A BOM and spaces in the header: label names as the image pipeline reads them.
    (tmp_path / "train.csv").write_text("\ufeffimage, sky, tree\n0.png,1,0\n1.png,0,1\n",
                                        encoding="utf-8")
    (tmp_path / "dev.csv").write_text("image,sky,tree\n2.png,1,1\n")
    data = load_training_data("multilabel_cnn", str(tmp_path), batch_size=2)
    assert data.model_kwargs == {"image_size": (64, 64), "labels": ["sky", "tree"]}
    x, y = next(iter(data.dev))
    assert x["image"].shape == (1, 64, 64, 3) and y["labels"].numpy().tolist() == [[1, 1]]
    with pytest.raises(ValueError, match="train.csv and dev.csv"):
        load_training_data("multilabel_cnn", str(tmp_path / "missing"))


@pytest.mark.large  # ~30 s: the benchmark script's own imports, baselines and training
def test_benchmark_quick_prints_the_baselines_and_the_recipe():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"}
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "multilabel.py"), "--quick"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    out = result.stdout
    assert result.returncode == 0, (out, result.stderr[-3000:])
    assert "== synthetic: 240 train + 60 validation / 100 dev rows" in out, out
    assert "subset acc." in out, out
    for row in ("BR logistic regr. C=", "BR RBF-SVM (default)", "ML-kNN k=10",
                "classifier chain (LR)", "mlp (recipe)", "mlp 80%, global F1 thr",
                "mlp 80%, per-label F1 thr"):
        assert any(line.startswith(row) and len(line.split()) >= 5
                   for line in out.splitlines()), (row, out)
    assert "synthetic: recipe Hamming " in out and "every baseline on both" in out, out
    assert "targets: yeast was not run" in out, out


def test_mlp_recipe_and_weight_decay():
    recipe = zoo.registry.get_entry("multilabel_mlp").recipe
    assert recipe["epochs"] == 60 and recipe["batch_size"] == 32
    rate = recipe["optimizer"](10, recipe["epochs"]).get_config()["learning_rate"]
    assert rate["class_name"] == "CosineDecay" and rate["config"]["decay_steps"] == 600
    # A dataset of unknown length gets a constant rate, not an error.
    np.testing.assert_allclose(float(recipe["optimizer"](None, 60).learning_rate), 1e-3)
    model = zoo.create_model("multilabel_mlp", hidden_units=(4,), weight_decay=0.5)
    trunk = model.get_layer("trunk_0")
    trunk.kernel.assign(np.ones((16, 4)))
    # L2(0.5) on a 16x4 kernel of ones: 0.5 * 64 = 32.
    np.testing.assert_allclose(float(sum(model.losses)), 32.0, rtol=1e-6)
    assert not zoo.create_model("multilabel_mlp", hidden_units=(4,), weight_decay=0).losses
    with pytest.raises(ValueError, match="weight_decay.*Received: weight_decay=-1"):
        zoo.create_model("multilabel_mlp", weight_decay=-1)


def write_mulan_folder(folder, rows=20, split=None):
    """A plain MULAN folder: `toy-train.arff` with `rows` rows (2 features,
    labels l1, l2) and `toy.xml`; `dev_split_seed0.txt` if `split` is given."""
    folder.mkdir(parents=True, exist_ok=True)
    data = [f"{i},{i % 3}.5,{i % 2},{int(i % 4 == 0)}" for i in range(rows)]
    (folder / "toy-train.arff").write_text(
        "@relation toy\n@attribute f1 numeric\n@attribute f2 numeric\n"
        "@attribute l1 {0,1}\n@attribute l2 {0,1}\n@data\n" + "\n".join(data) + "\n")
    (folder / "toy.xml").write_text(
        '<labels xmlns="http://mulan.sourceforge.net/labels">'
        '<label name="l1"/><label name="l2"/></labels>\n')
    if split is not None:
        (folder / "dev_split_seed0.txt").write_text(split)
    return folder


def test_plain_mulan_folder_gets_a_seeded_dev_fraction(tmp_path):
    folder = write_mulan_folder(tmp_path / "toy")
    data = load_training_data("multilabel_mlp", str(folder))
    assert data.train[0].shape == (18, 2) and data.dev[0].shape == (2, 2)
    assert "(dev: random 0.1 of the rows, seed 0)" in data.summary
    again = load_training_data("multilabel_mlp", str(folder), seed=0)
    np.testing.assert_array_equal(again.dev[0], data.dev[0])
    other = load_training_data("multilabel_mlp", str(folder), seed=3, dev_fraction=0.25)
    assert other.dev[0].shape == (5, 2) and "random 0.25 of the rows, seed 3" in other.summary
    # Train and dev split the rows: every feature value f1 (= row index) once.
    assert sorted(other.train[0][:, 0].tolist() + other.dev[0][:, 0].tolist()) == list(range(20))

    # The split file wins, and the summary says so when a fraction was asked for.
    write_mulan_folder(folder, split="3\n7\n")
    data = load_training_data("multilabel_mlp", str(folder), dev_fraction=0.5)
    assert data.dev[0][:, 0].tolist() == [3, 7]
    assert "dev: dev_split_seed0.txt, which wins over --dev-fraction" in data.summary
    with pytest.raises(ValueError, match="--dev-fraction applies to MULAN folders"):
        load_training_data("multilabel_mlp", "synthetic", dev_fraction=0.2)


def test_mulan_folder_errors_name_the_file_and_the_real_options(tmp_path):
    empty = write_mulan_folder(tmp_path / "empty", rows=0)
    with pytest.raises(ValueError, match=r"toy-train\.arff: no data rows after @data"):
        load_training_data("multilabel_mlp", str(empty))
    one = write_mulan_folder(tmp_path / "one", rows=1)
    with pytest.raises(ValueError, match=r"toy-train\.arff: 1 data row; a dev split needs "
                       "at least 2"):
        load_training_data("multilabel_mlp", str(one))
    everything = write_mulan_folder(tmp_path / "all", rows=2, split="0\n1\n")
    with pytest.raises(ValueError, match=r"dev_split_seed0\.txt: lists 2 of the 2 rows"):
        load_training_data("multilabel_mlp", str(everything))
    # The library's own error offers the library's options.
    (everything / "dev_split_seed0.txt").unlink()
    with pytest.raises(ValueError, match=r"dev_split_seed0\.txt \(or pass dev_fraction=0\.1"):
        mtl.data.load_mulan_benchmark(everything)
    train, dev = mtl.data.load_mulan_benchmark(everything, dev_fraction=0.5, seed=1)
    assert (len(train), len(dev)) == (1, 1) and dev.metadata["dev_split"].startswith("random")
