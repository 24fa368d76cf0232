"""Training state survives interruption and saving: a run resumed by
`BackupAndRestore` equals the uninterrupted one for every stateful weighting
and balancer, random weightings continue their stream after a `.keras` round
trip, and a non-finite step of a loss weighting is skipped and counted."""

import keras
import numpy as np
import pytest

import kerasmtl as mtl
from harness import run_mirrored_script, tiny_model
from kerasmtl.data import synthetic_tabular
from kerasmtl.tasks import synthetic_tabular_tasks

EPOCHS = 4


class _Interrupt(keras.callbacks.Callback):
    """Raises at the end of epoch `epoch`, as a killed job would stop."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("interrupted")


def _model(make_weighting, seed):
    keras.utils.set_random_seed(seed)
    model = tiny_model(synthetic_tabular_tasks(), weighting=make_weighting())
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    return model


def _fit(model, x, y, callbacks=()):
    return model.fit(
        x, y, epochs=EPOCHS, batch_size=32, shuffle=False,
        callbacks=list(callbacks), verbose=0,
    )


def _state(model):
    # Trunk, heads and weighting state (DWA's epoch losses, RLW's sampler),
    # keyed by position: layer names differ between two models of a process.
    return {
        f"{i}:{v.path.split('/', 1)[-1]}": keras.ops.convert_to_numpy(v)
        for i, v in enumerate(model.variables)
    }


@pytest.mark.parametrize(
    "make_weighting",
    [
        mtl.weighting.DynamicWeightAverage,
        mtl.weighting.Uncertainty,
        mtl.weighting.RandomLossWeighting,  # seed=None: the stream is in the backup
        mtl.weighting.GradNorm,
        mtl.weighting.PCGrad,  # its random order follows the optimizer step
        mtl.weighting.AutoLambda,  # weights and Adam state
        # Stateless beyond the weights it reports; slow to trace.
        pytest.param(mtl.weighting.NashMTL, marks=pytest.mark.large),
    ],
    ids=lambda make: make.__name__,
)
def test_resumed_run_equals_the_uninterrupted_one(make_weighting, tmp_path):
    x, y = synthetic_tabular(96, seed=0)
    reference = _model(make_weighting, seed=0)
    _fit(reference, x, y)

    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    interrupted = _model(make_weighting, seed=0)
    with pytest.raises(RuntimeError, match="interrupted"):
        _fit(interrupted, x, y, [backup, _Interrupt(epoch=1)])
    # Another initialisation: everything the resumed run uses must come
    # from the backup.
    resumed = _model(make_weighting, seed=1)
    history = _fit(resumed, x, y, [keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))])
    assert len(history.epoch) == EPOCHS - 2

    expected, got = _state(reference), _state(resumed)
    assert set(expected) == set(got)
    for path in expected:
        np.testing.assert_allclose(got[path], expected[path], atol=1e-6, err_msg=path)
    assert resumed.optimizer.iterations.numpy() == reference.optimizer.iterations.numpy()


def test_dwa_state_is_updated_before_user_callbacks_see_it(tmp_path):
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(float(self.model.weighting.epochs_seen.numpy()))

    x, y = synthetic_tabular(64, seed=0)
    model = _model(mtl.weighting.DynamicWeightAverage, seed=0)
    model.fit(x, y, epochs=2, batch_size=32, callbacks=[Record()], verbose=0)
    assert seen == [1.0, 2.0]


def _draws(weighting, steps=3):
    losses = {n: 1.0 for n in weighting.task_names}
    out = []
    for _ in range(steps):
        weighting(losses, training=True)
        out.append(keras.ops.convert_to_numpy(weighting.task_weights))
    return np.stack(out)


def test_random_weights_continue_the_same_stream_after_a_keras_round_trip(tmp_path):
    x, y = synthetic_tabular(64, seed=0)
    model = _model(mtl.weighting.RandomLossWeighting, seed=0)  # seed=None
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    path = str(tmp_path / "rlw.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    state = keras.ops.convert_to_numpy(model.weighting.weights[-1])
    assert state[1] == 2  # two training steps drew two sets of weights
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded.weighting.weights[-1]), state
    )
    np.testing.assert_allclose(_draws(loaded.weighting), _draws(model.weighting), atol=1e-7)


@pytest.mark.parametrize(
    "make_weighting",
    [mtl.weighting.Equal, mtl.weighting.Uncertainty, mtl.weighting.AutoLambda],
    ids=["Equal", "Uncertainty", "AutoLambda"],
)
def test_a_non_finite_step_of_a_loss_weighting_is_skipped_and_counted(make_weighting):
    x, y = synthetic_tabular(96, seed=0)
    x = x.copy()
    x[40, 3] = np.inf  # second batch of three
    model = _model(make_weighting, seed=0)
    history = model.fit(x, y, epochs=2, batch_size=32, shuffle=False, verbose=0)
    assert history.history["weighting/skipped_steps"] == [1.0, 1.0]
    assert model.optimizer.iterations.numpy() == 4
    for variable in model.trainable_variables:
        assert np.all(np.isfinite(keras.ops.convert_to_numpy(variable))), variable.path
    clean = np.isfinite(x).all(axis=1)
    assert np.all(np.isfinite(model.predict(x[clean], verbose=0)["size"]))


def test_the_skipped_step_leaves_weights_and_optimizer_as_they_were():
    x, y = synthetic_tabular(64, seed=0)
    bad = x.copy()
    bad[0, 0] = np.inf
    model = _model(mtl.weighting.Equal, seed=0)
    model.fit(x[:32], {k: v[:32] for k, v in y.items()}, batch_size=32, verbose=0)
    before = _state(model)
    optimizer_before = [keras.ops.convert_to_numpy(v) for v in model.optimizer.variables]
    logs = model.fit(
        bad[:32], {k: v[:32] for k, v in y.items()}, batch_size=32, verbose=0
    ).history
    assert logs["weighting/skipped_steps"] == [1.0]
    after = _state(model)
    for path, value in before.items():
        np.testing.assert_array_equal(after[path], value, err_msg=path)
    for a, b in zip(model.optimizer.variables, optimizer_before):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), b)


MIRRORED_SCRIPT = """
out = {"rlw": single_and_mirrored(lambda: mtl.weighting.RandomLossWeighting(seed=3))}
x[12, 0] = np.inf           # in replica 1's shard only
with strategy.scope():
    model = build(mtl.weighting.Equal)
    model.compile(optimizer=keras.optimizers.SGD(0.5))
start = model.get_weights()
logs = model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0).history
out["skip"] = {
    "skipped": logs["weighting/skipped_steps"][0],
    "iterations": int(model.optimizer.iterations.numpy()),
    "max_change": max_diff(model.get_weights(), start),
}
print("RESULT " + json.dumps(out))
"""


@pytest.mark.large  # ~16 s: a two-replica subprocess
def test_mirrored_random_weights_and_skipped_step():
    result = run_mirrored_script(MIRRORED_SCRIPT)
    rlw = result["rlw"]
    assert rlw["max_step"] > 1e-3
    # Both replicas draw the single device's weights.
    assert rlw["max_weight_diff"] < 1e-5, rlw
    # One replica's inf skips the step on every replica.
    assert result["skip"] == {"skipped": 1.0, "iterations": 0, "max_change": 0.0}
