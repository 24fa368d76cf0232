"""Tests for `kerasmtl.export`: signature contents, numbers against the Keras
model, loading without kerasmtl, no Python ops, versioning, atomicity, errors."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import fcntl  # noqa: E402
import stat  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.core.protobuf import saved_model_pb2  # noqa: E402

import kerasmtl as mtl  # noqa: E402
from harness import contract_model  # noqa: E402
from kerasmtl.data import synthetic_tabular  # noqa: E402

PY_FUNC_OPS = {"PyFunc", "PyFuncStateless", "EagerPyFunc"}


def _snippet_model(train: bool = False) -> mtl.MultiTaskModel:
    model = contract_model()
    model.compile(optimizer="adam")
    if train:
        x, y = synthetic_tabular(64, seed=0)
        model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The snippet's model, trained one epoch, exported once for several tests."""
    keras.utils.set_random_seed(0)
    model = _snippet_model(train=True)
    base = tmp_path_factory.mktemp("export")
    version_dir = mtl.export.export_saved_model(model, base / "demo")
    x, _ = synthetic_tabular(16, seed=1)
    raw = model.predict(x, verbose=0)
    expected = {**raw, **{k: np.asarray(v) for k, v in model.postprocess(raw).items()}}
    return version_dir, x, expected


def _assert_outputs_match(got: dict, expected: dict):
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        if key.endswith("_prediction") and value.dtype.kind in "iu":
            np.testing.assert_array_equal(got[key], value, err_msg=key)
        else:
            np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-6, err_msg=key)


def test_signature_matches_model(exported):
    version_dir, x, expected = exported
    assert os.path.basename(version_dir) == "1"
    assert sorted(expected) == [
        "size", "size_prediction", "species", "species_prediction",
        "tags", "tags_prediction",
    ]
    signature = tf.saved_model.load(version_dir).signatures["serving_default"]
    _, input_specs = signature.structured_input_signature
    assert list(input_specs) == ["features"]
    assert input_specs["features"].shape.as_list() == [None, 8]
    assert input_specs["features"].dtype == tf.float32
    got = {k: v.numpy() for k, v in signature(features=tf.constant(x)).items()}
    _assert_outputs_match(got, expected)


def test_loads_without_kerasmtl(exported, tmp_path):
    version_dir, x, expected = exported
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(
        f"""
        import os, sys
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
        sys.modules["kerasmtl"] = None  # any import of them now fails
        sys.modules["zoo"] = None
        import numpy as np
        import tensorflow as tf
        signature = tf.saved_model.load({version_dir!r}).signatures["serving_default"]
        x = np.load({str(tmp_path / "x.npy")!r})
        outputs = signature(features=tf.constant(x))
        np.savez({str(tmp_path / "out.npz")!r}, **{{k: v.numpy() for k, v in outputs.items()}})
        assert "kerasmtl" not in {{m.split(".")[0] for m, v in sys.modules.items() if v}}
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with np.load(tmp_path / "out.npz") as got:
        _assert_outputs_match(dict(got), expected)


def test_graph_has_no_python_ops(exported):
    version_dir, _, _ = exported
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(version_dir, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    ops = set()
    for meta_graph in saved_model.meta_graphs:
        ops.update(node.op for node in meta_graph.graph_def.node)
        for function in meta_graph.graph_def.library.function:
            ops.update(node.op for node in function.node_def)
    assert "ArgMax" in ops  # the scan did reach the serving function's body
    assert not ops & PY_FUNC_OPS


def test_versions_count_up_and_can_be_chosen(tmp_path):
    model = _snippet_model()
    base = tmp_path / "models"
    assert mtl.export.export_saved_model(model, base) == str(base / "1")
    assert mtl.export.export_saved_model(model, str(base)) == str(base / "2")
    assert mtl.export.export_saved_model(model, base, version=7) == str(base / "7")
    assert mtl.export.export_saved_model(model, base) == str(base / "8")
    assert mtl.export.export_saved_model(model, base, version=np.int64(3)).endswith("3")
    (base / ".DS_Store").write_text("")  # hidden entries are ignored
    with pytest.raises(ValueError, match=r"Version 7 already exists in '.*models'"):
        mtl.export.export_saved_model(model, base, version=7)
    assert sorted(os.listdir(base)) == [".DS_Store", "1", "2", "3", "7", "8"]


@pytest.mark.parametrize("version", [0, -1, 1.0, "2", True])
def test_invalid_version(tmp_path, version):
    with pytest.raises(ValueError, match=r"Expected a positive int or None.*version="):
        mtl.export.export_saved_model(_snippet_model(), tmp_path / "m", version=version)
    assert not (tmp_path / "m").exists()


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    real_save = tf.saved_model.save

    def save_then_fail(obj, export_dir, *args, **kwargs):
        real_save(obj, export_dir, *args, **kwargs)  # files on disk, then a crash
        raise OSError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", save_then_fail)
    model = _snippet_model()
    base = tmp_path / "models"
    with pytest.raises(OSError, match="disk full"):
        mtl.export.export_saved_model(model, base)
    assert os.listdir(base) == []
    monkeypatch.undo()
    assert mtl.export.export_saved_model(model, base) == str(base / "1")
    assert os.listdir(base) == ["1"]


def test_path_is_a_file(tmp_path):
    path = tmp_path / "model.keras"
    path.write_text("")
    with pytest.raises(ValueError, match=r"'.*model\.keras' exists and is a file"):
        mtl.export.export_saved_model(_snippet_model(), path)


@pytest.mark.parametrize("stray", ["x.txt", "v1", "saved_model.pb"])
def test_path_with_other_content(tmp_path, stray):
    base = tmp_path / "base"
    (base / "1").mkdir(parents=True)
    (base / stray).write_text("")
    with pytest.raises(
        ValueError,
        match=rf"'.*base' exists and is not a model base directory \(found '{stray}'\)"
        r"; pass a new or empty directory",
    ):
        mtl.export.export_saved_model(_snippet_model(), base)
    assert sorted(os.listdir(base)) == sorted(["1", stray])


def test_integer_named_file_is_not_a_version(tmp_path):
    (tmp_path / "2").write_text("")
    with pytest.raises(ValueError, match=r"found '2'"):
        mtl.export.export_saved_model(_snippet_model(), tmp_path)


def test_rejects_plain_keras_model(tmp_path):
    x = keras.Input((3,))
    model = keras.Model(x, keras.layers.Dense(1)(x))
    with pytest.raises(
        ValueError,
        match=r"export to '.*m': .*expects a kerasmtl\.MultiTaskModel.*Received: Functional",
    ):
        mtl.export.export_saved_model(model, tmp_path / "m")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("structure", ["list", "dict"])
def test_several_named_inputs(tmp_path, structure):
    a = keras.Input((3,), name="a")
    b = keras.Input((2,), name="b", dtype="int32")
    shared = keras.layers.Concatenate()([a, keras.ops.cast(b, "float32")])
    tasks = [mtl.tasks.Classification("kind", num_classes=2), mtl.tasks.Regression("y")]
    inputs = [a, b] if structure == "list" else {"b": b, "a": a}
    model = mtl.sharing.hard_sharing(inputs, shared, tasks)
    version_dir = mtl.export.export_saved_model(model, tmp_path)

    signature = tf.saved_model.load(version_dir).signatures["serving_default"]
    _, input_specs = signature.structured_input_signature
    assert sorted(input_specs) == ["a", "b"]
    assert input_specs["a"].shape.as_list() == [None, 3]
    assert input_specs["b"].dtype == tf.int32
    assert sorted(signature.structured_outputs) == [
        "kind", "kind_prediction", "y", "y_prediction",
    ]
    xa = np.random.default_rng(0).normal(size=(4, 3)).astype("float32")
    xb = np.arange(8, dtype="int32").reshape(4, 2)
    feed = [xa, xb] if structure == "list" else {"a": xa, "b": xb}
    raw = model.predict(feed, verbose=0)
    got = signature(a=tf.constant(xa), b=tf.constant(xb))
    np.testing.assert_allclose(got["y"].numpy(), raw["y"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(
        got["kind_prediction"].numpy(), np.argmax(raw["kind"], axis=-1)
    )


def test_output_name_clash_leaves_nothing_behind(tmp_path):
    # Task "y_prediction"'s raw output and task "y"'s prediction share a name.
    x = keras.Input((3,), name="x")
    tasks = [mtl.tasks.Regression("y"), mtl.tasks.Regression("y_prediction")]
    model = mtl.sharing.hard_sharing(x, x, tasks)
    with pytest.raises(ValueError, match=r"'y_prediction' .* both a raw output"):
        mtl.export.export_saved_model(model, tmp_path)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("umask, mode", [(0o022, 0o755), (0o027, 0o750)])
def test_version_directory_modes_follow_the_umask(tmp_path, umask, mode):
    # As tf.saved_model.save gives: a server running as another user (the
    # tensorflow/serving container) must be able to read the version.
    old = os.umask(umask)
    try:
        version_dir = mtl.export.export_saved_model(_snippet_model(), tmp_path / "m")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(version_dir).st_mode) == mode
    assert stat.S_IMODE(os.stat(os.path.join(version_dir, "variables")).st_mode) == mode


def test_stale_temp_dirs_are_removed_and_live_ones_kept(tmp_path, caplog):
    base = tmp_path / "m"
    old = time.time() - 3600
    stale = base / ".tmp-export-123-killed"  # its writer was killed mid-export
    (stale / "variables").mkdir(parents=True)
    (stale / "saved_model.pb").write_bytes(b"half")
    os.utime(stale, (old, old))
    recent = base / ".tmp-export-456-recent"  # just made: maybe not locked yet
    recent.mkdir()
    live = base / ".tmp-export-789-live"  # old, but its writer holds the lock
    live.mkdir()
    os.utime(live, (old, old))
    lock = os.open(live, os.O_RDONLY)
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        with caplog.at_level("WARNING", logger="kerasmtl.export"):
            version_dir = mtl.export.export_saved_model(_snippet_model(), base)
    finally:
        os.close(lock)
    assert sorted(os.listdir(base)) == [".tmp-export-456-recent", ".tmp-export-789-live", "1"]
    assert version_dir == str(base / "1")
    assert "Removed 1 temporary directory" in caplog.text
    assert ".tmp-export-123-killed" in caplog.text


def _export_during_export(monkeypatch, base, inner_version, outer_version):
    """Runs export A; while A writes, export B to the same base path runs to
    the end, so A finds its version taken when it renames its temp dir."""
    real_save = tf.saved_model.save
    inner = []

    def save_with_another_export(obj, export_dir, *args, **kwargs):
        if not inner:
            inner.append(None)
            inner[0] = mtl.export.export_saved_model(_snippet_model(), base,
                                                     version=inner_version)
        real_save(obj, export_dir, *args, **kwargs)

    monkeypatch.setattr(tf.saved_model, "save", save_with_another_export)
    try:
        outer = mtl.export.export_saved_model(_snippet_model(), base, version=outer_version)
    finally:
        monkeypatch.undo()
    return inner[0], outer


def test_concurrent_exports_take_distinct_versions(tmp_path, monkeypatch):
    base = tmp_path / "m"
    inner, outer = _export_during_export(monkeypatch, base, None, None)
    assert (inner, outer) == (str(base / "1"), str(base / "2"))
    assert sorted(os.listdir(base)) == ["1", "2"]
    for version_dir in (inner, outer):
        assert "serving_default" in tf.saved_model.load(version_dir).signatures


def test_concurrent_export_of_an_explicit_version_fails_clearly(tmp_path, monkeypatch):
    base = tmp_path / "m"
    with pytest.raises(ValueError, match=r"Version 4 appeared in '.*m' while this export "
                       r"was being written .* Pass another version, or version=None"):
        _export_during_export(monkeypatch, base, 4, 4)
    assert os.listdir(base) == ["4"]  # the other export's; no temp dir left
