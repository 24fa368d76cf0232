"""The train step of gradient balancers (PCGrad, MGDA, ...), a mixin of
`MultiTaskModel`.

Loss-level weightings keep Keras' own `train_step`; a `GradientBalancer` needs
one gradient per task, so `MultiTaskModel.train_step` calls
`_balanced_train_step` here (see its docstring for what goes where). Kept apart
from `model.py` so that the model's wiring reads on its own. TensorFlow-specific
by design (DESIGN.md: gradient balancers' train step).

The step also logs the cosine similarity of every pair of task gradients,
`grad_cos/<a>-<b>` (a conflict signal: near -1, the tasks pull the shared
weights apart), from the Gram matrix the balancer sees: no extra backward
pass. Its epoch mean counts the applied steps where both tasks are active
(labelled, with a non-zero gradient); a pair never active in an epoch logs 0.
Training-only: `evaluate` (and `fit`'s dev pass) leaves it out.
`MultiTaskModel.compile(log_gradient_cosine=False)` turns it off.
"""

from __future__ import annotations

import contextlib

import keras
import numpy as np
import tensorflow as tf

from kerasmtl.autograph import skip_autograph
from kerasmtl.distribution import all_finite, all_reduce_sum, replicas_in_sync
from kerasmtl.weighting import GradientBalancer


class GradientBalancingMixin:
    """`MultiTaskModel`'s gradient-balancer machinery: the shared
    representation for `rep_grad=True`, and the balanced train step."""

    def _set_shared_features(self, shared_features):
        """Records the shared representation as `{"layer", "index"}` (a list
        of them for several trunk outputs) and, for a rep-grad balancer, a
        functional view returning it with the outputs."""
        several = isinstance(shared_features, (list, tuple))
        entries = list(shared_features) if several else [shared_features]
        configs = [_feature_config(f) for f in entries] if shared_features is not None else None
        config = configs if several else (configs[0] if configs else None)
        object.__setattr__(self, "shared_features", config)
        object.__setattr__(self, "_features_model", None)
        balancer = self.weighting
        if not (isinstance(balancer, GradientBalancer) and balancer.rep_grad):
            return
        if not configs:
            raise ValueError(
                f"{type(balancer).__name__}(rep_grad=True) balances the gradients "
                "w.r.t. the shared representation, but the model does not know it. "
                "Build the model with mtl.sharing.hard_sharing, or pass "
                "MultiTaskModel(..., shared_features=<the trunk's output tensor(s)>)."
            )
        features = [self._feature_tensor(c) for c in configs]
        # `_inputs_struct`, `_outputs_struct`: the functional graph, private
        # in Keras (same guard as in `_feature_tensor`).
        view = keras.Model(
            self._inputs_struct, (self._outputs_struct, features if several else features[0])
        )
        object.__setattr__(self, "_features_model", view)

    def _feature_tensor(self, config):
        """The Keras tensor that `config` (`{"layer", "index"}`) names."""
        # `_nodes_by_depth`: the functional graph, private in Keras (guarded
        # by the rep_grad tests in tests/test_balancer_training.py); a public
        # route would rebuild the graph from get_config.
        nodes = [
            node
            for depth_nodes in self._nodes_by_depth.values()
            for node in depth_nodes
            if node.operation.name == config["layer"]
        ]
        if len(nodes) != 1:
            raise ValueError(
                f"shared_features names layer '{config['layer']}', which is called "
                f"{len(nodes)} times in model '{self.name}'. Give the output of a "
                "layer called exactly once (e.g. wrap it in keras.layers.Identity)."
            )
        return nodes[0].output_tensors[config["index"]]

    @skip_autograph
    def _balanced_train_step(self, data):
        """One step of a gradient balancer.

        - Parameter mode: one backward per task (T `tape.gradient` calls, which
          measured faster on CPU than a pfor Jacobian). A variable that gets a
          gradient from two or more task losses is shared (decided from the
          graph at trace time) and gets the balanced update; any other
          variable gets the sum of its task gradients (its own task's).
        - `rep_grad=True`: one backward per task through its head to the
          shared representation z (one tensor, or several trunk outputs whose
          gradients make one row per task), then one backward through the
          trunk with the balanced gradient of z. Variables upstream of z get that; all
          others their task gradients (only the trunk should feed z).
        - The soft-sharing penalty and regularisation losses are not balanced:
          their gradient is added to the update, as weight decay would be.
        - Distribution: the balancer sees the global batch's per-task
          gradients (all-reduced, or the all-reduced Gram matrix of z's
          gradients), so the update equals the single-device one.
        - Mixed precision: the task gradients stay loss-scaled (the update is
          linear in them, so `LossScaleOptimizer` unscales and checks it); only
          the `[T, T]` Gram matrix the balancer sees is unscaled.
        - A task with no known label in the global batch, or a zero gradient,
          is left out of the balance. A non-finite gradient or loss, or no
          task left, skips the step: weights, optimizer state and
          `optimizer.iterations` are unchanged (under mixed_float16 the
          `LossScaleOptimizer` skips it, and lowers its scale), and
          `balancer/skipped_steps` counts it.
        - `grad_cos/<a>-<b>`: the cosine of the pair's gradients, from the
          same `[T, T]` Gram matrix (global, so the same on every replica).
        """
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        balancer = self.weighting
        replicas = replicas_in_sync()
        variables = list(self.trainable_variables)
        with tf.GradientTape(persistent=True) as tape:
            if balancer.rep_grad:
                y_pred, features = self._features_model(x, training=True)
            else:
                y_pred, features = self(x, training=True), None
            total, losses, present, extra = self._compute_losses(
                y, y_pred, sample_weight, training=True, track_weights=False
            )
            scale = tf.cast(self.optimizer.scale_loss(tf.constant(1.0)), tf.float32)
            # One scalar per task, made inside the tape (a slice taken outside
            # it would not be watched).
            scaled = [losses[n] / replicas * scale for n in self.task_names]
            if extra is not None:
                extra = extra / replicas * scale
        loss_tracker = getattr(self, "_loss_tracker", None)
        if loss_tracker is not None:
            batch = tf.shape(next(t for t in tf.nest.flatten(x) if t is not None))[0]
            loss_tracker.update_state(total * replicas, sample_weight=batch)

        if balancer.rep_grad:
            grads, matrix, apply_update = self._rep_gradients(
                tape, scaled, features, variables
            )
        else:
            grads, matrix, apply_update = self._parameter_gradients(
                tape, scaled, variables, replicas
            )
        if extra is not None:
            extra_grads = tape.gradient(extra, variables)
            grads = [_add(g, e) for g, e in zip(grads, extra_grads)]
        del tape

        shares = tf.stack([losses[n] for n in self.task_names]) / replicas
        # `matrix` holds loss-scaled gradients: unscale the [T, T] Gram only.
        gram = tf.matmul(matrix, matrix, transpose_b=True) / tf.square(scale)
        global_losses = shares
        if replicas > 1:
            if balancer.rep_grad:
                gram = all_reduce_sum(gram)
            global_losses = all_reduce_sum(shares)
        finite = (
            tf.reduce_all(tf.math.is_finite(gram))
            & tf.reduce_all(tf.math.is_finite(global_losses))
            & all_finite(grads)
        )
        gram = tf.where(finite, gram, tf.zeros_like(gram))
        global_losses = tf.where(finite, global_losses, tf.zeros_like(global_losses))
        present_vec = tf.stack([present[n] for n in self.task_names])
        active = (present_vec > 0) & (tf.linalg.diag_part(gram) > 0)
        weights = balancer.weights_from_gram(
            gram, global_losses, active, self.optimizer.iterations
        )
        ok = finite & tf.reduce_any(active) & tf.reduce_all(tf.math.is_finite(weights))
        grads = apply_update(grads, weights)
        if balancer.rep_grad:
            # The trunk's gradients come from the balanced one only now; one
            # that overflows (float16) makes the LossScaleOptimizer skip.
            ok = ok & all_finite(grads)
        self._apply_unless_skipped(ok, grads, variables)
        balancer.update_state(gram, global_losses, active, weights, ok)
        if "weight" in self._mtl_metrics:
            self._track_weights()
        self._count_skipped(ok)
        self._track_gradient_cosine(gram, active, ok)
        return self.train_step_metrics(x, y, y_pred, sample_weight=sample_weight)

    def _track_gradient_cosine(self, gram, active, ok):
        """Adds the step's pairwise gradient cosines to `grad_cos/<a>-<b>`,
        for the pairs whose tasks are both active in an applied step."""
        trackers = self._mtl_metrics.get("grad_cos")
        if not trackers:
            return
        if gram.dtype.size < 4:  # a float16 model's Gram: cosines in float32
            gram = tf.cast(gram, tf.float32)
        norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(gram), 0.0))
        # One norm at a time: their product could overflow float32.
        cosine = tf.math.divide_no_nan(
            tf.math.divide_no_nan(gram, norms[:, None]), norms[None, :]
        )
        cosine = tf.clip_by_value(tf.cast(cosine, tf.float32), -1.0, 1.0)
        for (a, b), tracker in trackers.items():
            counted = ok & active[a] & active[b]
            tracker.update_state(
                tf.where(counted, cosine[a, b], 0.0),
                sample_weight=tf.cast(counted, tf.float32),
            )

    def _visible_gradient_cosine(self) -> list:
        """The `grad_cos/*` metrics, for `MultiTaskModel.metrics`; none while
        evaluating, where they would only log zeros."""
        if getattr(self, "_training_only_hidden", 0):
            return []
        return list(self._mtl_metrics.get("grad_cos", {}).values())

    @contextlib.contextmanager
    def _training_only_metrics_hidden(self):
        # A count, not a flag: MirroredStrategy traces each replica's step in
        # a thread of its own, and they interleave at all-reduces.
        depth = getattr(self, "_training_only_hidden", 0)
        object.__setattr__(self, "_training_only_hidden", depth + 1)
        try:
            yield
        finally:
            object.__setattr__(self, "_training_only_hidden", self._training_only_hidden - 1)

    def evaluate(self, *args, **kwargs):
        # Keras reads the epoch's logs back from `self.metrics` when their
        # keys match the step's (else it keeps the last step's, which under
        # MirroredStrategy are a mean of per-replica values): hide the
        # training-only metrics for the whole evaluation ...
        with self._training_only_metrics_hidden():
            return super().evaluate(*args, **kwargs)

    @skip_autograph
    def test_step(self, data):
        # ... and from the test step as it is traced (`test_on_batch` too).
        with self._training_only_metrics_hidden():
            return super().test_step(data)

    def _parameter_gradients(self, tape, scaled, variables, replicas):
        per_task = [tape.gradient(scaled[t], variables) for t in range(len(self._tasks))]
        users = [sum(g[i] is not None for g in per_task) for i in range(len(variables))]
        shared = [i for i, n in enumerate(users) if n >= 2]
        if not shared:
            raise ValueError(
                f"{type(self.weighting).__name__} balances the gradients of shared "
                f"parameters, but no variable of model '{self.name}' gets a gradient "
                "from two or more task losses. Use a loss weighting, or a model with "
                "a shared trunk (mtl.sharing.hard_sharing)."
            )
        grads = [
            None if users[i] >= 2 else _add_all([g[i] for g in per_task])
            for i in range(len(variables))
        ]
        rows = [
            tf.concat(
                [tf.reshape(_zeros_if_none(g[i], variables[i]), [-1]) for i in shared], 0
            )
            for g in per_task
        ]
        matrix = tf.stack(rows)
        if replicas > 1:
            matrix = all_reduce_sum(matrix)

        def apply_update(grads, weights):
            update = self.weighting.combine_gradients(matrix, weights)
            update = update / replicas  # the optimizer sums replicas
            sizes = [int(np.prod(variables[i].shape)) for i in shared]
            for i, part in zip(shared, tf.split(update, sizes)):
                part = tf.reshape(part, variables[i].shape)
                grads[i] = part if grads[i] is None else grads[i] + part
            return grads

        return grads, matrix, apply_update

    def _rep_gradients(self, tape, scaled, features, variables):
        # Several trunk outputs (e.g. an FPN level and a stride-2 skip): each
        # task's row is its gradients w.r.t. all of them, concatenated.
        features = tf.nest.flatten(features)
        upstream = [g is not None for g in tape.gradient(features, variables)]
        others = [i for i, up in enumerate(upstream) if not up]
        rows, grads = [], [None] * len(variables)
        for t in range(len(self._tasks)):
            task_grads = tape.gradient(
                scaled[t], [*features, *(variables[i] for i in others)]
            )
            grad_z, task_grads = task_grads[: len(features)], task_grads[len(features):]
            rows.append(tf.concat([
                tf.reshape(tf.cast(_zeros_if_none(g, f), "float32"), [-1])
                for g, f in zip(grad_z, features)
            ], axis=0))
            for i, g in zip(others, task_grads):
                grads[i] = _add(grads[i], g)
        matrix = tf.stack(rows)
        trunk = [i for i, up in enumerate(upstream) if up]

        def apply_update(grads, weights):
            if not trunk:
                return grads
            balanced = self.weighting.combine_gradients(matrix, weights)
            sizes = [tf.size(f) for f in features]
            balanced = [
                tf.cast(tf.reshape(part, tf.shape(f)), f.dtype)
                for part, f in zip(tf.split(balanced, tf.stack(sizes)), features)
            ]
            trunk_grads = tape.gradient(
                features, [variables[i] for i in trunk], output_gradients=balanced
            )
            for i, g in zip(trunk, trunk_grads):
                grads[i] = _add(grads[i], g)
            return grads

        return grads, matrix, apply_update

    def _count_skipped(self, ok):
        """Adds a skipped step (`ok` False) to the `*/skipped_steps` metric."""
        if "skipped" in self._mtl_metrics:
            # Every replica counts the step; the metric sums the replicas.
            skipped = (1.0 - tf.cast(ok, tf.float32)) / replicas_in_sync()
            self._mtl_metrics["skipped"].update_state(skipped)

    def _apply_unless_skipped(self, ok, grads, variables):
        pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
        grads, variables = [p[0] for p in pairs], [p[1] for p in pairs]
        optimizer = self.optimizer
        if not optimizer.built:
            optimizer.build(self.trainable_variables)
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            # Its own finiteness check skips the step (and lowers the scale);
            # one non-finite gradient is enough to trip it. A dense one is
            # poisoned: an embedding's IndexedSlices would be densified.
            i = next((i for i, g in enumerate(grads) if isinstance(g, tf.Tensor)), 0)
            grads = list(grads)
            grads[i] = tf.where(ok, grads[i], tf.constant(np.nan, grads[i].dtype))
            optimizer.apply(grads, variables)
            return

        def apply():
            optimizer.apply(grads, variables)

        if not tf.distribute.has_strategy() or (
            tf.__internal__.distribute.strategy_supports_no_merge_call()
        ):
            tf.cond(ok, apply, lambda: None)
            return

        def in_cross_replica(distribution, ok, grads):
            ok = distribution.experimental_local_results(ok)[0]

            def apply_each():
                distribution.extended.call_for_each_replica(
                    optimizer.apply, args=(grads, variables)
                )

            tf.cond(ok, apply_each, lambda: None)

        tf.distribute.get_replica_context().merge_call(
            in_cross_replica, args=(ok, grads)
        )


# Between the task names of a pair's metric: task names cannot hold it, so
# the pair reads back unambiguously (with `__`, `x__y__z` could be `x` and
# `y__z` or `x__y` and `z`); and unlike `,`, `:` or `|` (which Keras 3.15 and
# TensorBoard tags accept) it is valid in a TensorFlow name scope.
PAIR_SEPARATOR = "-"


def gradient_cosine_metrics(task_names) -> dict:
    """`{(a, b): Mean}` for every pair of task indices `a < b`, named
    `grad_cos/<task a>-<task b>`."""
    names = list(task_names)
    return {
        (a, b): keras.metrics.Mean(name=f"grad_cos/{names[a]}{PAIR_SEPARATOR}{names[b]}")
        for a in range(len(names))
        for b in range(a + 1, len(names))
    }


def _add(a, b):
    if a is None:
        return b
    return a if b is None else a + b


def _add_all(values):
    total = None
    for value in values:
        total = _add(total, value)
    return total


def _zeros_if_none(grad, like):
    if grad is not None:
        return grad
    return tf.zeros_like(like) if tf.is_tensor(like) else tf.zeros(like.shape, like.dtype)


def _feature_config(feature):
    """`{"layer", "index"}` of a Keras tensor of the model's graph (a dict
    passes through: a config read back from `get_config`)."""
    if isinstance(feature, dict):
        return feature
    # Keras has no public "which layer made this tensor"; the functional
    # graph's record is `_keras_history` (private API, guarded by the
    # rep_grad tests in tests/test_balancer_training.py).
    history = getattr(feature, "_keras_history", None)
    if history is None:
        raise ValueError(
            "Invalid value for argument `shared_features`. Expected a Keras "
            "tensor of this model's graph (the trunk's output), or a list of "
            f"them. Received: {feature!r}"
        )
    return {"layer": history.operation.name, "index": history.tensor_index}
