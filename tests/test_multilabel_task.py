"""MultiLabel task: arguments, stored thresholds, top-k, label names,
calibration, `.keras` round trip, SavedModel export, label-attention head."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasmtl as mtl
from harness import as_json, run_model_saving_test
from kerasmtl.calibration import calibrate_thresholds
from kerasmtl.layers.multilabel_heads import LabelAttentionHead, MultiLabelOutput
from kerasmtl.losses.multilabel import SigmoidFocalLoss
from kerasmtl.tasks.multilabel import MultiLabel

NAMES = ["cat", "dog", "car"]
# Validation probabilities (off the 0.01 grid) and labels, chosen so that by
# hand: label 0 has F1 = 1 for thresholds 0.26..0.35, label 1 for 0.71..0.80,
# label 2 has no known positive. The -1 at p = 0.05 would break label 0's
# perfect F1 at 0.35 if it were read as a positive.
PROBS = np.array(
    [[0.355, 0.805, 0.3], [0.4, 0.9, 0.2], [0.45, 0.95, 0.6],
     [0.1, 0.55, 0.1], [0.2, 0.6, 0.4], [0.255, 0.705, 0.7], [0.05, 0.3, 0.2]],
    "float32",
)
LABELS = np.array(
    [[1, 1, 0], [1, 1, -1], [1, 1, 0], [0, 0, 0], [0, 0, 0], [0, 0, -1], [-1, 0, 0]]
)


def identity_model(task):
    """Outputs exactly `sigmoid(x)`: a model whose probabilities we choose."""
    x = keras.Input((task.num_labels,), name="logits_in")
    model = mtl.sharing.hard_sharing(x, x, [task])
    model.get_layer(f"{task.name}_logits").set_weights(
        [np.eye(task.num_labels), np.zeros(task.num_labels)]
    )
    return model


def logits(probs):
    probs = np.asarray(probs, "float64")
    return (np.log(probs) - np.log1p(-probs)).astype("float32")


def f1(pred, labels):
    known = labels >= 0
    tp = np.sum(pred.astype(bool) & (labels == 1) & known)
    fp = np.sum(pred.astype(bool) & (labels == 0) & known)
    fn = np.sum(~pred.astype(bool) & (labels == 1) & known)
    return 2 * tp / max(2 * tp + fp + fn, 1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_labels": 3, "threshold": 0.0}, r"`threshold` of task 'tags'.*\(0, 1\)"),
        ({"num_labels": 3, "threshold": [0.5, 1.2, 0.5]}, r"`threshold` of task 'tags'"),
        ({"num_labels": 3, "threshold": [0.5, 0.5]}, r"'tags'.*2 values for 3 labels"),
        ({"num_labels": 3, "pos_weight": [1.0, 2.0]}, r"`pos_weight`.*'tags'.*2 values for 3"),
        ({"num_labels": 3, "pos_weight": -1.0}, r"`pos_weight` of task 'tags'.*> 0"),
        ({"num_labels": 3, "decision": "top_k", "top_k": 4}, r"`top_k` of task 'tags'.*\[1, 3\]"),
        ({"num_labels": 3, "decision": "top_k"}, r"`top_k` of task 'tags'.*top_k=None"),
        ({"num_labels": 3, "top_k": 2}, r"'tags'.*decision='top_k'"),
        ({"num_labels": 3, "decision": "argmax"}, r"`decision` of task 'tags'"),
        ({"num_labels": 3, "head": "gcn"}, r"`head` of task 'tags'"),
        ({"num_labels": 3, "head_config": {"embed_dim": 8}}, r"'tags'.*head='label_attention'"),
        ({"num_labels": 3, "head": "label_attention",
          "head_config": {"embed_dim": 6, "num_heads": 4}}, r"head_config.*'tags'.*divide"),
        ({"num_labels": 3, "label_smoothing": 1.0}, r"`label_smoothing` of task 'tags'"),
        ({"num_labels": 3, "loss": SigmoidFocalLoss(), "pos_weight": 2.0},
         r"'tags'.*on the loss object"),
        ({"labels": ["a", "b", "a"]}, r"`labels` of task 'tags'.*Duplicates: \['a'\]"),
        ({"labels": ["a", ""]}, r"`labels` of task 'tags'.*non-empty str"),
        ({"num_labels": 2, "labels": NAMES}, r"'tags'.*num_labels=2 but 3 label names"),
        ({}, r"'tags' needs `num_labels` or `labels`"),
    ],
)
def test_invalid_arguments_name_the_task(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MultiLabel("tags", **kwargs)


def test_backward_compatible_signature_and_config_round_trip():
    old = MultiLabel("m", 3, 0.3)  # (name, num_labels, threshold) positionally
    assert (old.num_labels, old.threshold, old.labels, old.head) == (3, 0.3, None,
                                                                     "independent")
    task = MultiLabel(
        "tags", labels=NAMES, threshold=[0.2, 0.5, 0.7], loss="asl",
        label_smoothing=0.1, pos_weight=[1.0, 2.0, 3.0], head="label_attention",
        head_config={"embed_dim": 8, "num_heads": 2}, hidden_layers=[4],
    )
    assert task.num_labels == 3
    for t in (old, task, MultiLabel("k", 4, decision="top_k", top_k=2,
                                    loss=SigmoidFocalLoss(gamma=1.0))):
        clone = mtl.tasks.deserialize(mtl.tasks.serialize(t))
        assert type(clone) is MultiLabel and clone.get_config() == t.get_config()


def test_top_k_decision():
    task = MultiLabel("tags", labels=NAMES, decision="top_k", top_k=2)
    out = task.postprocess(np.array([[0.9, 0.1, 0.95], [0.2, 0.3, 0.1]], "float32"))
    assert out["tags_prediction"].numpy().tolist() == [[1, 0, 1], [1, 1, 0]]
    assert out["tags_labels"].numpy().tolist() == [[b"cat", b"", b"car"],
                                                   [b"cat", b"dog", b""]]
    assert out["tags_prediction"].dtype == tf.int32


def test_thresholds_stored_in_model_and_used_by_postprocess_and_metrics():
    task = MultiLabel("tags", labels=NAMES, threshold=[0.3, 0.5, 0.7])
    model = identity_model(task)
    bound = model.get_task("tags")
    assert bound is not task and task.output_layer is None
    layer = model.get_layer("tags")
    assert isinstance(layer, MultiLabelOutput) and not layer.trainable_weights
    np.testing.assert_allclose(layer.thresholds.numpy(), [0.3, 0.5, 0.7])

    probs = np.array([[0.35, 0.45, 0.75], [0.25, 0.55, 0.65]], "float32")
    out = model.postprocess(model.predict(logits(probs), verbose=0))
    assert out["tags_prediction"].numpy().tolist() == [[1, 0, 1], [0, 1, 0]]
    layer.thresholds.assign([0.2, 0.5, 0.7])  # what calibration does
    out = model.postprocess({"tags": probs})
    assert out["tags_prediction"].numpy().tolist() == [[1, 0, 1], [1, 1, 0]]
    assert out["tags_labels"].numpy().tolist() == [[b"cat", b"", b"car"],
                                                   [b"cat", b"dog", b""]]

    # Metrics score the stored-threshold decisions: with labels equal to them,
    # accuracy and F1 are 1 (at one threshold of 0.5 they would not be).
    model.compile(optimizer="sgd")
    labels = np.array([[1, 0, 1], [1, 1, -1]])
    report = mtl.evaluation.task_report(model, logits(probs), {"tags": labels})
    assert report["tags"]["binary_accuracy"] == pytest.approx(1.0)
    assert report["tags"]["f1"] == pytest.approx(1.0)


def test_calibration_improves_f1_and_writes_the_layer():
    task = MultiLabel("tags", labels=NAMES)
    model = identity_model(task)
    before = f1(np.asarray(model.postprocess({"tags": PROBS})["tags_prediction"]), LABELS)
    thresholds = calibrate_thresholds(model, logits(PROBS), {"tags": LABELS})
    # Hand-derived: F1 = 1 for thresholds in (0.255, 0.355] (label 0) and
    # (0.705, 0.805] (label 1); their midpoints are picked, a float32 ulp
    # away from no probability. Label 2 has no positive and keeps 0.5.
    np.testing.assert_allclose(thresholds, [0.305, 0.755, 0.5], atol=1e-6)
    np.testing.assert_allclose(model.get_layer("tags").thresholds.numpy(), thresholds)
    pred = np.asarray(model.postprocess({"tags": PROBS})["tags_prediction"])
    after = f1(pred, LABELS)
    # At 0.5: TP 3 (label 1), FP 3 (label 1) + 1 (label 2, p = 0.6), FN 3
    # (label 0): 6 / 13. After: only label 2's false positive is left: 12 / 13.
    assert before == pytest.approx(6 / 13) and after == pytest.approx(12 / 13)

    # global_f1, from a tf.data dataset: one threshold maximizing micro-F1,
    # checked by brute force over the same candidates (none equal to a
    # probability: such a tie would depend on the CPU's float32 kernels).
    dataset = tf.data.Dataset.from_tensor_slices(
        (logits(PROBS), {"tags": LABELS})).shuffle(7, seed=1).batch(3)
    grid = [0.32, 0.58, 0.75]
    got = calibrate_thresholds(model, dataset, strategy="global_f1", grid=grid)
    scores = {t: f1(PROBS >= t, LABELS) for t in (*grid, 0.5)}
    np.testing.assert_allclose(got, max(scores, key=scores.get), atol=1e-6)
    # Without a grid: the exact search is at least as good as any candidate.
    best = calibrate_thresholds(model, dataset, strategy="global_f1")
    assert f1(PROBS >= best[0], LABELS) >= max(scores.values())


def test_calibration_is_robust_to_one_ulp_and_exact():
    # Probabilities 1 ulp apart (as other CPU kernels compute them) give the
    # same thresholds; and the exact search beats or equals a fine grid.
    rng = np.random.default_rng(3)
    probs = rng.uniform(0.05, 0.95, size=(60, 3)).astype("float32")
    labels = (rng.uniform(size=(60, 3)) < probs).astype("int64")
    labels[rng.uniform(size=(60, 3)) < 0.1] = -1
    nudged = np.nextafter(probs, np.float32(1), dtype="float32")
    model = identity_model(MultiLabel("tags", 3))
    a = calibrate_thresholds(model, logits(probs), labels)
    b = calibrate_thresholds(model, logits(nudged), labels)
    np.testing.assert_allclose(a, b, atol=1e-5)
    served = np.asarray(model.predict(logits(probs), verbose=0)["tags"])
    for label in range(3):
        known = labels[:, label] >= 0
        y = labels[known, label][:, None]
        got = f1(served[known, label][:, None] >= a[label], y)
        grid_best = max(f1(probs[known, label][:, None] >= t, y)
                        for t in np.linspace(0.01, 0.99, 99))
        assert got >= grid_best - 1e-9


def test_calibration_errors():
    model = identity_model(MultiLabel("tags", 3))
    with pytest.raises(ValueError, match=r"`grid`.*\(0, 1\)"):
        calibrate_thresholds(model, logits(PROBS), LABELS, grid=[0.0, 0.5])
    with pytest.raises(ValueError, match=r"`strategy`"):
        calibrate_thresholds(model, logits(PROBS), LABELS, strategy="macro")
    with pytest.raises(ValueError, match=r"labels of task 'tags'"):
        calibrate_thresholds(model, logits(PROBS))
    with pytest.raises(ValueError, match=r"No multi-label task named 'other'"):
        calibrate_thresholds(model, logits(PROBS), LABELS, task="other")
    top_k = identity_model(MultiLabel("tags", 3, decision="top_k", top_k=1))
    with pytest.raises(ValueError, match=r"'tags'.*top_k.*no thresholds"):
        calibrate_thresholds(top_k, logits(PROBS), LABELS)


def test_keras_round_trip_and_export_keep_calibrated_thresholds(tmp_path):
    task = MultiLabel("tags", labels=NAMES, pos_weight=[1.0, 2.0, 1.0])
    model = identity_model(task)
    calibrate_thresholds(model, logits(PROBS), LABELS)
    x = logits(PROBS)
    loaded = run_model_saving_test(model, x, tmp_path)
    np.testing.assert_allclose(loaded.get_layer("tags").thresholds.numpy(),
                               [0.305, 0.755, 0.5], atol=1e-6)
    expected = model.postprocess(model.predict(x, verbose=0))
    got = loaded.postprocess(loaded.predict(x, verbose=0))
    np.testing.assert_array_equal(got["tags_prediction"], expected["tags_prediction"])
    assert as_json(loaded.get_task("tags").get_config()) == as_json(task.get_config())

    version_dir = mtl.export.export_saved_model(loaded, tmp_path / "export")
    serve = tf.saved_model.load(version_dir).signatures["serving_default"]
    out = serve(logits_in=tf.constant(x))
    pred = out["tags_prediction"].numpy()
    np.testing.assert_array_equal(pred, (PROBS >= [0.35, 0.71, 0.5]).astype("int32"))
    assert out["tags_labels"].dtype == tf.string
    names = np.where(pred == 1, np.array(NAMES, object), "").astype(bytes)
    np.testing.assert_array_equal(out["tags_labels"].numpy(), names)


def correlated_problem(n, seed):
    """Labels 0 and 1 are the same event; label 2 is label 0 AND x1 > 0."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    a = (x[:, 0] > 0).astype("int32")
    y = np.stack([a, a, a * (x[:, 1] > 0)], axis=1)
    return x, y


def test_label_attention_head_learns_correlated_labels(tmp_path):
    task = MultiLabel("tags", 3, head="label_attention",
                      head_config={"embed_dim": 8, "num_heads": 2})
    inputs = keras.Input((4,), name="features")
    shared = keras.layers.Dense(8, activation="relu")(inputs)
    model = mtl.sharing.hard_sharing(inputs, shared, [task])
    assert isinstance(model.get_layer("tags_label_attention"), LabelAttentionHead)
    assert model.get_layer("tags_label_attention")._use_self_attention
    # SGD: far cheaper to trace than Adam on CPU, which dominates this test.
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    x, y = correlated_problem(128, seed=0)
    history = model.fit(x, {"tags": y}, epochs=8, batch_size=32, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < 0.6 * losses[0], losses
    assert history.history["tags/f1"][-1] > 0.8
    run_model_saving_test(model, x[:8], tmp_path)


def test_label_attention_on_sequences_masks_padding_and_round_trips(tmp_path):
    task = MultiLabel("tags", labels=NAMES, head="label_attention",
                      head_config={"embed_dim": 8, "num_heads": 2})
    tokens = keras.Input((5,), dtype="int32", name="tokens")
    embedding = keras.layers.Embedding(10, 6, mask_zero=True, name="embedding")
    model = mtl.sharing.hard_sharing(tokens, embedding(tokens), [task])
    assert not model.get_layer("tags_label_attention")._use_self_attention
    x = np.array([[3, 4, 0, 0, 0], [5, 1, 2, 7, 9]], "int32")
    probs = model.predict(x, verbose=0)["tags"]
    assert probs.shape == (2, 3) and np.all((probs > 0) & (probs < 1))
    # The padding id's embedding is masked out of the attention: changing it
    # changes nothing.
    table = embedding.embeddings.numpy()
    table[0] = 5.0
    embedding.embeddings.assign(table)
    np.testing.assert_allclose(model.predict(x, verbose=0)["tags"], probs, atol=1e-6)
    run_model_saving_test(model, x, tmp_path)


def test_hand_built_head_falls_back_to_the_threshold_argument():
    # As in models saved before thresholds were stored: a sigmoid Dense head.
    task = MultiLabel("tags", 2, threshold=[0.4, 0.6])
    x = keras.Input((2,))
    head = keras.layers.Dense(2, activation="sigmoid", name="tags")(x)
    model = mtl.MultiTaskModel(x, {"tags": head}, tasks=[task])
    assert model.get_task("tags").output_layer is None
    out = model.postprocess({"tags": np.array([[0.5, 0.5]], "float32")})
    assert out["tags_prediction"].numpy().tolist() == [[1, 0]]
    with pytest.raises(ValueError, match=r"'tags'.*Dense, not a MultiLabelOutput"):
        calibrate_thresholds(model, np.zeros((2, 2)), np.zeros((2, 2)))
