"""The label checks of `kerasmtl.tasks.Detection` (`DetectionLabelChecks`,
a mixin that replaces `LabelChecks`' single-tensor checks): a dict
`{"boxes": [B, M, 4], "classes": [B, M]}` padded to at most `max_boxes`
rows, class ids in `[0, num_classes)` or -1, NaN boxes in every row of an
image without a label. Eager checks for numpy batches, an in-graph check of
the class ids for tf.data batches.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import tensorflow as tf  # in-graph label checks

from kerasmtl.tasks.label_checks import fmt_shape, graph_assert, ids_or_missing


class DetectionLabelChecks:
    """Mixin of `Detection` (needs `name`, `num_classes`, `max_boxes`)."""

    def label_help(self):
        return (
            "Pass {'boxes': float32 [batch, M, 4] (xyxy pixels), 'classes': int32 "
            f"[batch, M] (ids in [0, {self.num_classes}), -1 for padding)}} with M <= "
            f"max_boxes={self.max_boxes}; NaN boxes mark an image without a label."
        )

    def check_label_spec(self, y):
        where = f"Labels for task '{self.name}' (detection)"
        if not isinstance(y, Mapping):
            shape = getattr(y, "shape", None)
            raise ValueError(
                f"{where} must be a dict {{'boxes', 'classes'}}. Received: "
                f"{type(y).__name__}"
                + (f" of shape {fmt_shape(tuple(shape))}" if shape is not None else "")
                + f". {self.label_help()}"
            )
        if set(y) != {"boxes", "classes"}:
            raise ValueError(
                f"{where} have keys {sorted(y)}, expected ['boxes', 'classes']. "
                + self.label_help()
            )
        boxes = tuple(getattr(y["boxes"], "shape", np.shape(y["boxes"])))
        classes = tuple(getattr(y["classes"], "shape", np.shape(y["classes"])))
        if (len(boxes) != 3 or boxes[2] not in (4, None) or len(classes) != 2
                or None not in (boxes[1], classes[1]) and boxes[1] != classes[1]):
            raise ValueError(
                f"{where} have boxes of shape {fmt_shape(boxes)} and classes of "
                f"shape {fmt_shape(classes)}; expected (batch, M, 4) and (batch, "
                f"M) with the same M. {self.label_help()}"
            )
        rows = boxes[1] if boxes[1] is not None else classes[1]
        if rows is not None and rows > self.max_boxes:
            raise ValueError(
                f"{where} have {rows} box rows per image, more than "
                f"max_boxes={self.max_boxes}. Raise max_boxes (to at least {rows}) "
                "in the Detection task, or pad the labels to at most max_boxes rows."
            )

    def check_label_shape(self, shape):
        raise ValueError(
            f"Labels for task '{self.name}' (detection) are a dict, not one tensor "
            f"of shape {fmt_shape(tuple(shape))}. {self.label_help()}"
        )

    def example_labels(self, batch_size: int = 1):
        return {
            "boxes": np.zeros((batch_size, self.max_boxes, 4), "float32"),
            "classes": np.full((batch_size, self.max_boxes), -1, "int32"),
        }

    def check_label_values(self, labels):
        self.check_label_spec(labels)
        where = f"Labels for task '{self.name}' (detection)"
        boxes = np.asarray(labels["boxes"], "float64")
        classes = np.asarray(labels["classes"])
        if classes.dtype.kind == "f":
            if np.isnan(classes).any() or not np.all(classes == np.round(classes)):
                raise ValueError(
                    f"{where} have class ids that are not integers (NaN or "
                    f"fractions). {self.label_help()}"
                )
        bad = (classes < -1) | (classes >= self.num_classes)
        if bad.any():
            raise ValueError(
                f"{where} have class ids {np.unique(classes[bad])[:10].tolist()} "
                f"outside [0, num_classes={self.num_classes}) (and -1 for padding). "
                "Encode classes with the task's class list, or raise num_classes."
            )
        nan = np.isnan(boxes)
        missing = nan.all(axis=(1, 2))
        partial = np.flatnonzero(nan.any(axis=(1, 2)) & ~missing)
        if partial.size:
            raise ValueError(
                f"{where}: image {int(partial[0])} has NaN in some boxes only "
                f"({partial.size} image(s) affected). NaN marks an image without a "
                "detection label, in every row (kerasmtl.boxes."
                "missing_detection_label); an image with no objects is all padding "
                "(class -1, box 0)."
            )
        labelled_classes = np.flatnonzero(missing & (classes >= 0).any(axis=1))
        if labelled_classes.size:
            raise ValueError(
                f"{where}: image {int(labelled_classes[0])} has NaN boxes (a missing "
                "label) but class ids >= 0. A missing label has class -1 in every "
                "row (kerasmtl.boxes.missing_detection_label)."
            )
        if np.isinf(boxes).any():
            raise ValueError(f"{where} contain infinite box coordinates.")
        objects = (classes >= 0) & ~missing[:, None]
        empty = objects & ((boxes[..., 2] <= boxes[..., 0]) | (boxes[..., 3] <= boxes[..., 1]))
        if empty.any():
            warnings.warn(
                f"{where}: {int(empty.sum())} box(es) of zero or negative size are "
                "ignored in training.",
                stacklevel=2,
            )

    def assert_label_values(self, labels):
        # tf.data batches never see check_label_values: the graph refuses
        # out-of-range class ids instead of ignoring them silently.
        classes = labels["classes"]
        if not tf.is_tensor(classes):
            classes = tf.convert_to_tensor(classes)
        check = graph_assert(
            self, classes, ids_or_missing(classes, self.num_classes),
            f"class ids in [0, {self.num_classes}) or -1 (padding)",
        )
        with tf.control_dependencies([check]):
            return {**labels, "classes": tf.identity(classes)}
