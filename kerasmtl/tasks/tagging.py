"""`Tagging`: one tag per token (POS, NER, chunking), softmax or CRF head."""

from __future__ import annotations

import copy
import numbers

import keras
import numpy as np
import tensorflow as tf  # string outputs of `postprocess` need TF string ops
from keras import ops

from kerasmtl.layers.crf import CRF
from kerasmtl.metrics.sequence_labeling import (
    EntityCounts,
    EntityF1,
    EntityPrecision,
    EntityRecall,
    check_scheme,
    split_tag,
)
from kerasmtl.tasks.base import Task, _apply_sample_weight
from kerasmtl.tasks.label_checks import fmt_shape, ids_or_missing

try:  # Where Keras 3 keeps the mask it attaches to layer outputs.
    from keras.src.backend.common.masking import get_keras_mask as _get_keras_mask
except ImportError:  # pragma: no cover - other Keras layouts

    def _get_keras_mask(x):
        return getattr(x, "_keras_mask", None)


_ENTITY_METRICS = {
    "entity_precision": EntityPrecision,
    "entity_recall": EntityRecall,
    "entity_f1": EntityF1,
}


@keras.saving.register_keras_serializable(package="kerasmtl")
class Tagging(Task):
    """Sequence tagging: one of `num_tags` tags per token.

    The head takes sequence features `[batch, time, dim]` and outputs
    `[batch, time, num_tags]`: tag probabilities (`crf=False`, a per-token
    softmax) or the emission scores of a linear-chain `CRF` layer
    (`crf=True`). Labels are int tag ids `[batch, time]`; `-1` marks padding
    and missing labels, which never count in the loss or metrics. A sentence
    labelled `-1` everywhere (e.g. no NER annotation) contributes nothing to
    this task and still trains the others.

    Softmax: the loss is the masked token cross-entropy (mean over labelled
    tokens). CRF: the loss is the sum of the sentences' negative
    log-likelihoods divided by the number of labelled tokens, the same scale.
    A CRF scores whole tag sequences, so a labelled sentence must be labelled
    at every token: its known labels must be a contiguous prefix, padded with
    `-1` at the end (`check_label_values`, run by `fit` on array labels,
    raises otherwise; in a `tf.data` pipeline a gap is skipped, the CRF then
    links the labelled tokens on both sides of it).

    Serving (`postprocess`) adds `<name>_prediction`, int32 tag ids
    `[batch, time]` (argmax, or the Viterbi path for a CRF), and with `tags`
    given `<name>_tags`, the tag strings. Padded positions get id `-1` and tag
    `""`. Padding is read from the Keras mask that Keras attaches to the
    output when the model masks its input (e.g. `Embedding(mask_zero=True)`),
    or from an explicit `mask`; without either, every position is a token.
    The Viterbi path of real tokens never depends on padding.

    Metrics: token `"accuracy"` (for a CRF, of the Viterbi path), and with a
    `scheme` the conlleval entity scores `"entity_precision"`,
    `"entity_recall"` and `"entity_f1"` (the primary metric).

    Args:
        name: str. The task's name.
        num_tags: int or None. Number of tags, at least 2. Derived from
            `tags` when omitted. Defaults to `None`.
        tags: list of str or None. The tag of each tag id (needed for entity
            metrics and for string outputs). Defaults to `None`.
        crf: bool. Whether the head is a linear-chain CRF (Viterbi
            decoding) instead of an independent softmax per token. Defaults to
            `False`.
        scheme: None, `"IOB2"` or `"IOBES"`. The entity encoding of `tags`
            (then required); `None` for tags that are not entities (POS).
            Defaults to `None`.
        hidden_layers, loss, loss_weight: see `Task`. With `crf=True`, `loss`
            must be `"auto"` (the CRF likelihood).

    Examples:

    >>> ner = Tagging("ner", tags=["O", "B-PER", "I-PER"], scheme="IOB2", crf=True)
    >>> ner.num_tags, ner.output_shape, ner.primary_metric
    (3, (None, 3), 'entity_f1')
    >>> Tagging("pos", 17).label_shape
    (None,)
    """

    kind = "tagging"
    label_dtype = "int32"
    higher_is_better = True

    def __init__(
        self,
        name: str,
        num_tags: int | None = None,
        *,
        tags=None,
        crf: bool = False,
        scheme: str | None = None,
        hidden_layers=(),
        loss="auto",
        loss_weight: float = 1.0,
    ):
        super().__init__(name, hidden_layers=hidden_layers, loss=loss, loss_weight=loss_weight)
        if tags is not None:
            if isinstance(tags, str) or not all(isinstance(t, str) and t for t in tags):
                raise ValueError(
                    f"Invalid value for argument `tags` of task '{name}'. Expected a "
                    f"list of non-empty strings, one per tag id. Received: tags={tags!r}"
                )
            tags = list(tags)
            repeated = sorted({t for t in tags if tags.count(t) > 1})
            if repeated:
                raise ValueError(
                    f"Invalid value for argument `tags` of task '{name}': {repeated} "
                    "appear more than once. Each tag id needs its own tag."
                )
            if num_tags is None:
                num_tags = len(tags)
            elif num_tags != len(tags):
                raise ValueError(
                    f"Task '{name}' got num_tags={num_tags!r} and {len(tags)} tags. "
                    "Give one of them, or make them agree."
                )
        if num_tags is None:
            raise ValueError(
                f"Task '{name}' needs `num_tags` or `tags` (the tag of each id)."
            )
        if isinstance(num_tags, bool) or not isinstance(num_tags, numbers.Integral) or num_tags < 2:
            raise ValueError(
                f"Invalid value for argument `num_tags` of task '{name}'. Expected an "
                f"int >= 2. Received: num_tags={num_tags!r}"
            )
        if scheme is not None:
            where = f" of task '{name}'"
            scheme = check_scheme(scheme, where)
            if tags is None:
                raise ValueError(
                    f"Task '{name}' has scheme={scheme!r} but no `tags`. Entity "
                    "metrics need the tag string of each id, e.g. tags=['O', 'B-PER', "
                    "'I-PER']."
                )
            for i, tag in enumerate(tags):
                split_tag(tag, scheme, f" (tag id {i}){where}")
        if not isinstance(crf, bool):
            raise ValueError(
                f"Invalid value for argument `crf` of task '{name}'. Expected a bool. "
                f"Received: crf={crf!r}"
            )
        if crf and not (isinstance(loss, str) and loss == "auto"):
            raise ValueError(_crf_loss_error(name, loss))
        self.num_tags = int(num_tags)
        self.tags = tags
        self.crf = crf
        self.scheme = scheme
        self.primary_metric = "entity_f1" if scheme else "accuracy"
        self._crf_layer = None

    # -- head -----------------------------------------------------------------

    @property
    def output_shape(self):
        return (None, self.num_tags)

    @property
    def label_shape(self):
        return (None,)

    def make_output_layer(self):
        if self.crf:
            return CRF(self.num_tags, name=self.name, dtype="float32")
        return keras.layers.Dense(
            self.num_tags, activation="softmax", name=self.name, dtype="float32"
        )

    def bind(self, model):
        if not self.crf:
            return self
        layer = model.get_layer(self.name)
        if not isinstance(layer, CRF):
            raise ValueError(
                f"Task '{self.name}' has crf=True but the model's layer '{self.name}' "
                f"is a {type(layer).__name__}, not a CRF. Build the head with "
                "task.build_head()."
            )
        bound = copy.copy(self)
        bound._crf_layer = layer
        return bound

    @property
    def crf_layer(self) -> CRF:
        """The bound model's `CRF` layer (CRF tasks only)."""
        if self._crf_layer is None:
            raise ValueError(
                f"Task '{self.name}' (CRF tagging) is not bound to a model: its loss, "
                "metrics and decoding need the CRF layer's transitions. Use the task "
                f"held by the model (`model.get_task('{self.name}')`; a "
                "MultiTaskModel binds its tasks when it is built) or "
                "`task.bind(model)`."
            )
        return self._crf_layer

    # -- labels and loss ------------------------------------------------------

    def label_help(self):
        return (
            f"Pass int tag ids in [0, {self.num_tags}) of shape (batch, time), and "
            "-1 for padding and missing labels."
        )

    def check_label_shape(self, shape):
        # Any sentence length: the base check does not treat a None in the
        # expected shape as "any size".
        shape = tuple(shape)
        if len(shape) != 2:
            raise ValueError(
                f"Labels for task '{self.name}' ({self.kind}) have shape "
                f"{fmt_shape(shape)}, expected (batch, time) = (None, None). "
                + self.label_help()
            )

    def check_label_values(self, labels):
        super().check_label_values(labels)
        labels = np.asarray(labels)
        self.check_integer_labels(labels, unit="token")
        if labels.dtype.kind not in "fiu" or not labels.size:
            return
        bad = (labels < -1) | (labels >= self.num_tags)
        if bad.any():
            raise ValueError(
                f"Labels for task '{self.name}' (tagging) contain an unknown tag in "
                f"the training labels: tag id(s) {np.unique(labels[bad])[:10].tolist()}"
                f" outside [0, num_tags={self.num_tags}) (and -1 for padding). "
                "Encode the labels with the same tag list as the task, or raise "
                "num_tags."
            )
        if self.crf:
            known = labels >= 0
            prefix = np.arange(known.shape[1]) < known.sum(axis=1, keepdims=True)
            gaps = np.flatnonzero((known != prefix).any(axis=1))
            if gaps.size:
                row = int(gaps[0])
                raise ValueError(
                    f"Labels for task '{self.name}' (CRF tagging) have a gap: sentence "
                    f"{row} has -1 labels before labelled tokens "
                    f"({labels[row].tolist()}). A CRF scores whole tag sequences, so a "
                    "sentence is labelled at every token or not at all: use -1 only "
                    "for padding at the end, or for every token of an unlabelled "
                    f"sentence ({gaps.size} sentence(s) affected)."
                )

    def valid_label_values(self, labels):
        return (
            ids_or_missing(labels, self.num_tags),
            f"tag ids in [0, num_tags={self.num_tags}) or -1 (padding, missing)",
        )

    def standardize_labels(self, y):
        y = ops.cast(ops.convert_to_tensor(y), "int32")
        mask = ops.cast(y >= 0, "float32")
        return ops.maximum(y, 0), mask

    def resolve_loss(self, loss="auto"):
        if self.crf and not (loss is None or (isinstance(loss, str) and loss == "auto")):
            raise ValueError(_crf_loss_error(self.name, loss))
        return super().resolve_loss(loss)

    def element_loss(self, y_true, y_pred):
        if self.crf:
            raise ValueError(
                f"Task '{self.name}' (CRF tagging) has no per-token loss; its loss "
                "is per sentence (`masked_loss`)."
            )
        return keras.losses.sparse_categorical_crossentropy(y_true, y_pred)

    def masked_loss(self, y, y_pred, sample_weight=None, loss_fn=None):
        """Masked mean loss and the (weighted) count of labelled tokens.

        Softmax: as `Task.masked_loss`, per token. CRF:

        Formula:
        ```
        loss = sum_s w_s * nll_s / sum_s w_s * n_s   (0 if the sum is 0)
        ```
        over sentences `s` with `n_s` labelled tokens and weight `w_s` (a
        per-token sample weight is averaged over the sentence's labels).
        """
        if not self.crf:
            return super().masked_loss(y, y_pred, sample_weight, loss_fn)
        y_true, mask = self.standardize_labels(y)
        nll = self.crf_layer.negative_log_likelihood(y_pred, y_true, mask > 0)
        tokens = ops.sum(mask, axis=1)
        weights = ops.sum(_apply_sample_weight(mask, sample_weight), axis=1)
        sentence_weight = ops.divide_no_nan(weights, tokens)
        # where(): sentences without labels add exactly 0, never NaN.
        total = ops.sum(ops.where(weights > 0, nll * sentence_weight, 0.0))
        count = ops.sum(weights)
        return ops.divide_no_nan(total, count), count

    # -- metrics --------------------------------------------------------------

    def default_metrics(self):
        metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        if self.scheme:
            metrics += [cls(self.tags, self.scheme) for cls in _ENTITY_METRICS.values()]
        return metrics

    def metric_from_identifier(self, identifier):
        if identifier in ("accuracy", "acc"):
            return keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        if isinstance(identifier, str) and identifier in _ENTITY_METRICS:
            if not self.scheme:
                raise ValueError(
                    f"Metric '{identifier}' of task '{self.name}' needs entity tags: "
                    "give the task `tags` and `scheme` ('IOB2' or 'IOBES')."
                )
            return _ENTITY_METRICS[identifier](self.tags, self.scheme)
        return super().metric_from_identifier(identifier)

    def update_metrics(self, metrics, y, y_pred, sample_weight=None):
        """Updates `metrics` on the labelled tokens; for a CRF, metrics see
        the Viterbi path (decoded over the labelled tokens) as one-hot scores.
        """
        y_true, mask = self.standardize_labels(y)
        weights = _apply_sample_weight(mask, sample_weight)
        if self.crf:
            path = self.crf_layer.decode(y_pred, mask > 0)
            y_pred = ops.one_hot(ops.maximum(path, 0), self.num_tags)
        entity_counts = {}
        # Token metrics see one row per token (`metric_rows`: unflattened,
        # length buckets read UPOS 0.3 points low on UD-EWT dev).
        tokens = self.metric_rows(y_true, y_pred, weights)
        for metric in metrics:
            if isinstance(metric, EntityCounts):
                # Precision, recall and F1 share one chunking of the batch.
                key = (tuple(metric.tags), metric.scheme)
                if key not in entity_counts:
                    entity_counts[key] = metric.count(y_true, y_pred, weights)
                metric.update_counts(entity_counts[key])
            else:
                metric.update_state(tokens[0], tokens[1], sample_weight=tokens[2])

    # -- serving --------------------------------------------------------------

    def postprocess(self, y_pred, mask=None):
        """Tag ids (and strings) per token; `-1` and `""` at padding.

        Args:
            y_pred: the task's output `[batch, time, num_tags]`.
            mask: optional bool `[batch, time]`, True at real tokens. Defaults
                to the Keras mask attached to `y_pred` (present on the outputs
                of a model whose input is masked, e.g. by
                `Embedding(mask_zero=True)`), else every position is real.
        """
        if mask is None:
            mask = _get_keras_mask(y_pred)
        y_pred = ops.convert_to_tensor(y_pred)
        if mask is None:
            mask = ops.ones(ops.shape(y_pred)[:2], dtype="bool")
        mask = ops.cast(mask, "bool")
        if self.crf:
            ids = self.crf_layer.decode(y_pred, mask)
        else:
            ids = ops.where(mask, ops.cast(ops.argmax(y_pred, axis=-1), "int32"), -1)
        outputs = {f"{self.name}_prediction": ids}
        if self.tags is not None:
            table = tf.constant([*self.tags, ""])
            outputs[f"{self.name}_tags"] = tf.gather(
                table, tf.where(ids >= 0, ids, self.num_tags)
            )
        return outputs

    # -- config ---------------------------------------------------------------

    def get_config(self):
        return {
            **super().get_config(),
            "num_tags": self.num_tags,
            "tags": None if self.tags is None else list(self.tags),
            "crf": self.crf,
            "scheme": self.scheme,
        }


def _crf_loss_error(name, loss) -> str:
    return (
        f"Task '{name}' has crf=True, whose loss is the CRF negative log-likelihood; "
        f"it cannot take another loss. Received: loss={loss!r}. Leave loss='auto', "
        "or use crf=False for a per-token loss."
    )
