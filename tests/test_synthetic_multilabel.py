"""The synthetic correlated multi-label data set."""

import numpy as np
import pytest

from harness import assert_finite_logs, tiny_model
from kerasmtl.data.tabular.synthetic_multilabel import (
    synthetic_multilabel,
    synthetic_multilabel_rules,
)
from kerasmtl.tasks.multilabel import MultiLabel


def test_deterministic_by_seed_and_shapes():
    a, b = synthetic_multilabel(300, seed=3), synthetic_multilabel(300, seed=3)
    np.testing.assert_array_equal(a.features, b.features)
    np.testing.assert_array_equal(a.labels, b.labels)
    c = synthetic_multilabel(300, seed=4)
    assert not np.array_equal(a.labels, c.labels)
    assert a.features.shape == (300, 16) and a.features.dtype == np.float32
    assert a.labels.shape == (300, 8) and a.labels.dtype == np.int32
    assert a.label_names == [f"label_{j}" for j in range(8)]
    assert a.metadata["rules"] == [
        "label_1 implies label_0", "label_3 implies label_2",
        "label_5 implies label_4", "label_7 = label_0 and label_2",
    ]


def test_label_cardinality_and_rules_hold():
    data = synthetic_multilabel(4000, seed=0)
    y = data.labels
    assert 2.0 <= data.label_cardinality() <= 3.0
    assert set(np.unique(y)) == {0, 1}
    for child in (1, 3, 5):
        assert np.all(y[:, child] <= y[:, child - 1]), child
    np.testing.assert_array_equal(y[:, 7], y[:, 0] & y[:, 2])
    # Correlation present: the implied label is far likelier given its child's parent.
    p1 = y[:, 1].mean()
    p1_given_0 = y[y[:, 0] == 1, 1].mean()
    assert p1_given_0 > 1.5 * p1
    assert np.corrcoef(y[:, 0], y[:, 1])[0, 1] > 0.5


def test_rules_for_few_labels():
    assert synthetic_multilabel_rules(2) == ["label_1 implies label_0"]
    assert synthetic_multilabel_rules(3) == ["label_1 implies label_0"]
    assert synthetic_multilabel_rules(5) == [
        "label_1 implies label_0", "label_3 implies label_2",
        "label_4 = label_0 and label_2",
    ]
    y = synthetic_multilabel(500, num_labels=5, seed=2).labels
    np.testing.assert_array_equal(y[:, 4], y[:, 0] & y[:, 2])


def test_missing_rate_masks_elements_and_known_entries_keep_the_rules():
    data = synthetic_multilabel(4000, missing_rate=0.25, seed=1)
    y = data.labels
    assert abs((y == -1).mean() - 0.25) < 0.02
    both = (y[:, 1] >= 0) & (y[:, 0] >= 0)
    assert np.all(y[both, 1] <= y[both, 0])
    # Same examples as without missing labels, apart from the mask.
    full = synthetic_multilabel(4000, seed=1).labels
    np.testing.assert_array_equal(y[y >= 0], full[y >= 0])


def test_features_predict_labels():
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    train, test = synthetic_multilabel(1500, seed=0), synthetic_multilabel(500, seed=1)
    for j in (0, 4):
        clf = LogisticRegression().fit(train.features, train.labels[:, j])
        auc = roc_auc_score(test.labels[:, j], clf.predict_proba(test.features)[:, 1])
        assert auc > 0.75, (j, auc)


def test_trains_a_multitask_model():
    data = synthetic_multilabel(64, num_features=8, num_labels=4, missing_rate=0.2)
    model = tiny_model([MultiLabel.from_data(data)], num_features=8)
    model.compile(optimizer="adam")
    history = model.fit(data.to_dataset(batch_size=32), epochs=2, verbose=0, shuffle=False)
    assert_finite_logs(history)


def test_invalid_arguments():
    for kwargs, message in [
        ({"missing_rate": 1.0}, r"`missing_rate`.*Received: missing_rate=1.0"),
        ({"num_features": 3}, r"`num_features`.*Received: num_features=3"),
        ({"num_labels": 1}, r"`num_labels`.*Received: num_labels=1"),
    ]:
        with pytest.raises(ValueError, match=message):
            synthetic_multilabel(10, **kwargs)
