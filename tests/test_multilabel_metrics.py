"""Multi-label metrics: numpy functions and Keras metrics against scikit-learn,
masked (-1) labels against sklearn on the known part, hand-checked examples,
streaming over batches, compiled evaluation, config round trips and errors."""

import warnings

import keras
import numpy as np
import pytest
from sklearn import metrics as skm

from kerasmtl.metrics import multilabel as ml
from kerasmtl.metrics import multilabel_all as mlall
from kerasmtl.metrics import multilabel_keras as mlk
from kerasmtl.metrics import multilabel_ranking as mlr

# (seed, shape): few cases, each test loops over its variants (tests are cheap;
# the per-test session reset is not).
CASES = [(0, (7, 5)), (1, (20, 3)), (2, (12, 4))]
KINDS = {
    "precision": ml.multilabel_precision,
    "recall": ml.multilabel_recall,
    "f1": ml.multilabel_f1,
    "jaccard": ml.multilabel_jaccard,
}


def make_data(seed, shape, unknown=False, weighted=False, grid=None):
    """Random labels with a row with no present label and a label never
    present; scores rounded to `grid` steps (ties) when given. With `unknown`,
    -1s where every row keeps >= 2 known labels, except one row and one label
    left fully unknown."""
    rng = np.random.default_rng(seed)
    n, num_labels = shape
    y = (rng.random(shape) < 0.4).astype(np.int64)
    y[0] = 0
    y[:, -1] = 0
    y[1, 0] = 1  # every shape keeps a present label
    s = rng.random(shape)
    if grid:
        s = np.round(s * grid) / grid
    if unknown:
        drop = rng.random(shape) < 0.3
        drop[:, 1] = True  # label 1 fully unknown
        drop[:, [0, 2 % num_labels]] = False  # other rows keep >= 2 known labels
        drop[-1] = True  # a row with nothing known
        y = np.where(drop, -1, y)
    w = rng.uniform(0.5, 2.0, n) if weighted else None
    return y, s, w


def sk_quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no positive class" etc.: expected
        return fn(*args, **kwargs)


def close(actual, expected, rtol=1e-6):
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=1e-12)


# -- functions vs sklearn on fully known labels ---------------------------------------------


@pytest.mark.parametrize("seed, shape", CASES)
@pytest.mark.parametrize("weighted", [False, True])
def test_thresholded_functions_match_sklearn(seed, shape, weighted):
    y, s, w = make_data(seed, shape, weighted=weighted)
    pred = (s >= 0.5).astype(int)
    for average in ml.AVERAGES:
        for zd in (0, 1):
            p, r, f, _ = skm.precision_recall_fscore_support(
                y, pred, average=average, sample_weight=w, zero_division=zd)
            kw = dict(average=average, sample_weight=w, zero_division=zd)
            close(ml.multilabel_precision(y, s, **kw), p)
            close(ml.multilabel_recall(y, s, **kw), r)
            close(ml.multilabel_f1(y, s, **kw), f)
            close(ml.multilabel_jaccard(y, s, **kw),
                  skm.jaccard_score(y, pred, **kw))
    close(ml.hamming_loss(y, s, sample_weight=w), skm.hamming_loss(y, pred, sample_weight=w))
    close(ml.subset_accuracy(y, s, sample_weight=w),
          skm.accuracy_score(y, pred, sample_weight=w))


def test_per_label_threshold_matches_sklearn():
    y, s, w = make_data(3, (20, 3), weighted=True)
    threshold = [0.3, 0.5, 0.8]
    pred = (s >= np.array(threshold)).astype(int)
    close(ml.multilabel_f1(y, s, average="macro", threshold=threshold, sample_weight=w),
          skm.f1_score(y, pred, average="macro", sample_weight=w, zero_division=0))
    close(ml.hamming_loss(y, s, threshold=threshold), skm.hamming_loss(y, pred))


@pytest.mark.parametrize("seed, shape", CASES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("grid", [None, 10])  # 10: many ties
def test_ranking_functions_match_sklearn(seed, shape, weighted, grid):
    y, s, w = make_data(seed, shape, weighted=weighted, grid=grid)
    close(mlr.label_ranking_average_precision(y, s, w),
          skm.label_ranking_average_precision_score(y, s, sample_weight=w))
    close(mlr.label_ranking_loss(y, s, w), skm.label_ranking_loss(y, s, sample_weight=w))
    close(mlr.coverage_error(y, s, w), skm.coverage_error(y, s, sample_weight=w))
    close(mlr.macro_average_precision(y, s, w),
          sk_quiet(skm.average_precision_score, y, s, average="macro", sample_weight=w))


def test_macro_ap_zero_weight_rows_are_dropped_like_sklearn():
    y, s, w = make_data(4, (12, 4), weighted=True, grid=10)
    w[[2, 5]] = 0.0
    close(mlr.macro_average_precision(y, s, w),
          sk_quiet(skm.average_precision_score, y, s, average="macro", sample_weight=w))


# -- masked (-1) labels vs sklearn on the known part -------------------------------------------


def _sk_binary(kind, y, pred, w=None, zd=0):
    if kind == "jaccard":
        return skm.jaccard_score(y, pred, sample_weight=w, zero_division=zd)
    fn = {"precision": skm.precision_score, "recall": skm.recall_score,
          "f1": skm.f1_score}[kind]
    return fn(y, pred, sample_weight=w, zero_division=zd)


@pytest.mark.parametrize("seed, shape", CASES)
def test_masked_thresholded_metrics_match_sklearn_on_known_part(seed, shape):
    y, s, w = make_data(seed, shape, unknown=True, weighted=True)
    pred = (s >= 0.5).astype(int)
    known = y >= 0
    rows = [i for i in range(len(y)) if known[i].any()]
    labels = [j for j in range(y.shape[1]) if known[:, j].any()]
    assert len(rows) < len(y) and len(labels) < y.shape[1]  # the masks matter
    flat_w = np.broadcast_to(w[:, None], y.shape)[known]
    for kind, fn in KINDS.items():
        for zd in (0, 1):
            kw = dict(sample_weight=w, zero_division=zd)
            close(fn(y, s, average="micro", **kw),
                  _sk_binary(kind, y[known], pred[known], flat_w, zd))
            macro = np.mean([
                _sk_binary(kind, y[known[:, j], j], pred[known[:, j], j],
                           w[known[:, j]], zd) for j in labels])
            close(fn(y, s, average="macro", **kw), macro)
            per_row = [_sk_binary(kind, y[i, known[i]], pred[i, known[i]], zd=zd)
                       for i in rows]
            close(fn(y, s, average="samples", **kw), np.average(per_row, weights=w[rows]))
    close(ml.hamming_loss(y, s, sample_weight=w),
          1 - skm.accuracy_score(y[known], pred[known], sample_weight=flat_w))
    exact = [np.array_equal(y[i, known[i]], pred[i, known[i]]) for i in rows]
    close(ml.subset_accuracy(y, s, sample_weight=w), np.average(exact, weights=w[rows]))


@pytest.mark.parametrize("seed, shape", CASES)
def test_masked_ranking_metrics_match_sklearn_on_known_part(seed, shape):
    y, s, w = make_data(seed, shape, unknown=True, weighted=True, grid=10)
    known = y >= 0
    rows = [i for i in range(len(y)) if known[i].any()]
    assert all(known[i].sum() >= 2 for i in rows)

    def per_row(fn):
        values = [fn(y[i:i + 1, known[i]], s[i:i + 1, known[i]]) for i in rows]
        return np.average(values, weights=w[rows])

    close(mlr.label_ranking_average_precision(y, s, w),
          per_row(skm.label_ranking_average_precision_score))
    close(mlr.label_ranking_loss(y, s, w), per_row(skm.label_ranking_loss))
    close(mlr.coverage_error(y, s, w), per_row(skm.coverage_error))
    labels = [j for j in range(y.shape[1]) if known[:, j].any()]
    macro_ap = np.mean([
        sk_quiet(skm.average_precision_score, y[known[:, j], j], s[known[:, j], j],
                 sample_weight=w[known[:, j]]) for j in labels])
    close(mlr.macro_average_precision(y, s, w), macro_ap)


def test_one_error_by_hand():
    y = [[0, 1, 0],    # top label 0 is absent -> error
         [1, 0, -1],   # unknown label 2 (top score) is skipped; label 0 -> right
         [0, 0, 0],    # no present label -> error
         [1, 1, 0],    # tie at the top between labels 0 and 2 -> label 0 -> right
         [-1, -1, -1]]  # nothing known -> left out
    s = [[0.9, 0.5, 0.1], [0.6, 0.2, 0.9], [0.3, 0.2, 0.1], [0.7, 0.1, 0.7],
         [0.1, 0.2, 0.3]]
    assert mlr.one_error(y, s) == 0.5
    # Weights 1, 2, 3, 4 on the kept rows: (1 + 3) / 10
    close(mlr.one_error(y, s, sample_weight=[1, 2, 3, 4, 100]), 0.4)


def test_masked_ranking_by_hand():
    y = [[1, -1, 0, 1], [0, 0, -1, -1]]
    s = [[0.4, 0.9, 0.5, 0.3], [0.2, 0.7, 0.1, 0.9]]
    # Row 1 known: 0 (+, .4), 2 (-, .5), 3 (+, .3). Ranks among known:
    # label 0 -> 2nd with 1 present above-or-equal: 1/2; label 3 -> 3rd, 2 present: 2/3.
    # Row 2 has no present label: LRAP 1, ranking loss 0, coverage 0.
    close(mlr.label_ranking_average_precision(y, s), ((1 / 2 + 2 / 3) / 2 + 1) / 2)
    # Row 1 pairs (present, absent): (0, 2) and (3, 2) both mis-ordered: 2/2.
    close(mlr.label_ranking_loss(y, s), (1 + 0) / 2)
    close(mlr.coverage_error(y, s), (3 + 0) / 2)


def test_zero_division_conventions_by_hand():
    # Row 2 has no true and no predicted label; label 1 is never true nor predicted.
    y = [[1, 0], [0, 0]]
    s = [[0.9, 0.1], [0.2, 0.3]]
    assert ml.multilabel_f1(y, s, average="samples") == 0.5
    assert ml.multilabel_f1(y, s, average="samples", zero_division=1) == 1.0
    assert ml.multilabel_precision(y, s, average="macro") == 0.5
    assert ml.multilabel_precision(y, s, average="macro", zero_division=1) == 1.0
    assert ml.multilabel_jaccard(y, s, average="samples") == 0.5


def test_nothing_known_gives_zero_or_zero_division():
    y, s = -np.ones((3, 2), int), np.full((3, 2), 0.7)
    report = mlall.multilabel_report(y, s)
    assert all(value == 0.0 for value in report.values()), report
    assert ml.multilabel_f1(y, s, average="macro", zero_division=1) == 1.0


def test_report_has_every_metric_and_matches_functions():
    y, s, w = make_data(5, (7, 5), weighted=True)
    report = mlall.multilabel_report(y, s, threshold=0.4, sample_weight=w)
    assert set(report) == {m.name for m in mlall.multilabel_keras_metrics()}
    assert len(report) == 19
    close(report["f1_macro"], ml.multilabel_f1(y, s, "macro", 0.4, w))
    close(report["one_error"], mlr.one_error(y, s, w))
    assert all(isinstance(v, float) for v in report.values())


# -- Keras metrics -----------------------------------------------------------------------


def stream(metric, y, s, w, cuts=(3, 4)):
    """Feeds `metric` in uneven batches, returns its result as a float."""
    bounds = [0, *cuts, len(y)]
    for a, b in zip(bounds, bounds[1:]):
        metric.update_state(y[a:b], s[a:b].astype("float32"),
                            sample_weight=None if w is None else w[a:b])
    return float(metric.result())


@pytest.mark.parametrize(
    "seed, shape, unknown, threshold",
    [(0, (7, 5), False, 0.5), (1, (20, 3), True, [0.3, 0.5, 0.7])],
)
def test_keras_metrics_over_batches_equal_functions(seed, shape, unknown, threshold):
    # Scores on a 0.01 grid: exact for the binned macro AP too, and ties.
    y, s, w = make_data(seed, shape, unknown=unknown, weighted=True, grid=100)
    report = mlall.multilabel_report(y, s, threshold=threshold, sample_weight=w)
    for metric in mlall.multilabel_keras_metrics(threshold=threshold):
        close(stream(metric, y, s, w), report[metric.name], rtol=1e-5)
    metric = mlk.MultiLabelF1Score("samples", threshold=threshold, zero_division=1)
    close(stream(metric, y, s, None),
          ml.multilabel_f1(y, s, "samples", threshold, zero_division=1), rtol=1e-5)


def test_keras_macro_ap_is_binned():
    y, s, _ = make_data(0, (20, 3))
    s = s.astype("float32")
    rounded = np.round(s.astype(np.float64) * 1000) / 1000
    got = stream(mlr.MacroAveragePrecision(), y, s, None)
    close(got, mlr.macro_average_precision(y, rounded), rtol=1e-5)
    np.testing.assert_allclose(got, mlr.macro_average_precision(y, s), atol=0.02)


def run_compiled_evaluate(metrics, jit_compile):
    y, s, w = make_data(1, (20, 3), unknown=True, weighted=True, grid=100)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Identity()])
    # weighted_metrics: Keras passes sample_weight only to those.
    model.compile(loss="mse", weighted_metrics=metrics, jit_compile=jit_compile)
    logs = model.evaluate(s.astype("float32"), y.astype("float32"), sample_weight=w,
                          batch_size=6, verbose=0, return_dict=True)
    report = mlall.multilabel_report(y, s, sample_weight=w)
    for metric in metrics:
        close(logs[metric.name], report[metric.name], rtol=1e-5)


def test_keras_metrics_in_compiled_evaluate():
    # One of each kind of state and update (tracing all 19 takes long).
    metrics = [mlk.MultiLabelF1Score("macro"), mlk.MultiLabelJaccard("samples"),
               mlr.OneError(), mlr.MacroAveragePrecision()]
    run_compiled_evaluate(metrics, jit_compile=False)


@pytest.mark.large
def test_all_keras_metrics_in_xla_compiled_evaluate():
    run_compiled_evaluate(mlall.multilabel_keras_metrics(), jit_compile=True)


def test_keras_metric_reset_and_config_round_trip():
    y, s, w = make_data(2, (7, 5), unknown=True, weighted=True, grid=100)
    for metric in mlall.multilabel_keras_metrics(threshold=[0.3, 0.4, 0.5, 0.6, 0.7]):
        assert metric.masks_unknown_labels  # the contract tasks rely on
        first = stream(metric, y, s, w)
        metric.reset_state()
        assert float(metric.result()) == 0.0
        close(stream(metric, y, s, w), first, rtol=1e-6)
        config = keras.saving.serialize_keras_object(metric)
        assert config["registered_name"].startswith("kerasmtl>")
        clone = keras.saving.deserialize_keras_object(config)
        assert type(clone) is type(metric)
        assert clone.get_config() == metric.get_config()
        close(stream(clone, y, s, w), first, rtol=1e-6)


def test_keras_confusion_metric_lazy_build_and_label_count_check():
    metric = mlk.MultiLabelPrecision(average="macro")
    assert metric.variables == []
    metric.update_state([[1, 0, 1]], [[0.9, 0.1, 0.2]])
    assert len(metric.variables) == 4
    with pytest.raises(ValueError, match="counts 3 labels but `y_pred` has shape"):
        metric.update_state([[1, 0]], [[0.9, 0.1]])


# -- errors --------------------------------------------------------------------------------------


ALL_FUNCTIONS = [*KINDS.values(), ml.hamming_loss, ml.subset_accuracy,
                 *mlr.RANKING_FUNCTIONS.values(), mlall.multilabel_report]


def test_function_errors():
    for fn in ALL_FUNCTIONS:
        with pytest.raises(ValueError, match=r"shape \(2, 3\).*shape \(2, 4\)"):
            fn(np.zeros((2, 3)), np.zeros((2, 4)))
        with pytest.raises(ValueError, match=r"1 \(present\), 0 \(absent\) or -1.*\[2\]"):
            fn([[1, 2]], [[0.5, 0.5]])
        with pytest.raises(ValueError, match=r"found \[0.5\]"):
            fn([[1, 0.5]], [[0.5, 0.5]])
        with pytest.raises(ValueError,
                           match=r"`sample_weight` has shape \(3,\), expected \(1,\)"):
            fn([[1, 0]], [[0.5, 0.5]], sample_weight=[1, 2, 3])
        with pytest.raises(ValueError, match="NaN or infinite"):
            fn([[1, 0]], [[np.nan, 0.5]])


def test_threshold_outside_unit_interval():
    match = r"Expected a float in \(0, 1\)"
    for threshold in (0.0, 1.0, 1.5, -0.2, [0.5, 1.2], []):
        with pytest.raises(ValueError, match=match):
            ml.multilabel_f1([[1, 0]], [[0.5, 0.5]], threshold=threshold)
        with pytest.raises(ValueError, match=match):
            ml.hamming_loss([[1, 0]], [[0.5, 0.5]], threshold=threshold)
        with pytest.raises(ValueError, match=match):
            mlk.MultiLabelRecall(threshold=threshold)
        with pytest.raises(ValueError, match=match):
            mlk.SubsetAccuracy(threshold=threshold)


def test_threshold_vector_length_and_argument_errors():
    with pytest.raises(ValueError, match="3 values but the labels have 2 columns"):
        ml.multilabel_f1([[1, 0]], [[0.5, 0.5]], threshold=[0.5] * 3)
    with pytest.raises(ValueError, match="3 values but the labels have 2 columns"):
        mlk.HammingLoss(threshold=[0.5] * 3).update_state([[1, 0]], [[0.5, 0.5]])
    with pytest.raises(ValueError, match=r"`average`.*'micro', 'macro', 'samples'.*weighted"):
        ml.multilabel_f1([[1, 0]], [[0.5, 0.5]], average="weighted")
    with pytest.raises(ValueError, match=r"`zero_division`.*Received: zero_division=0.5"):
        mlk.MultiLabelF1Score(zero_division=0.5)
    with pytest.raises(ValueError, match="num_thresholds"):
        mlr.MacroAveragePrecision(num_thresholds=1)


def test_keras_metric_errors():
    for metric in mlall.multilabel_keras_metrics():
        with pytest.raises(
            ValueError,
            match=rf"'{metric.name}': `y_true` has shape \(2, 3\) and `y_pred` has "
                  r"shape \(2, 4\)",
        ):
            metric.update_state(np.zeros((2, 3)), np.zeros((2, 4), "float32"))
        with pytest.raises(ValueError, match=r"1 \(present\), 0 \(absent\) or -1"):
            metric.update_state(np.array([[1, 2]]), np.zeros((1, 2), "float32"))
        with pytest.raises(ValueError, match="one weight per example"):
            metric.update_state(np.zeros((2, 3)), np.zeros((2, 3), "float32"),
                                sample_weight=np.ones((2, 3)))
