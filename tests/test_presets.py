"""Trained presets (zoo/preset_loader.py) and training recipes (zoo/registry.py).

Tiny models, at most a step or two of training, no network beyond a local
HTTP server the test starts.
"""

import functools
import http.server
import json
import shutil
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

import zoo
from kerasmtl import cli
from zoo import fine_tuning, preset_loader, preset_writer, registry, training

LABELS = ["a", "b", "c"]


def tiny_model(labels=LABELS, num_features=6, train=True):
    model = zoo.create_model("multilabel_mlp", num_features=num_features, labels=labels,
                             hidden_units=(8,), dropout=0.0)
    if train:  # one step, so the weights are not the initial ones
        rng = np.random.default_rng(0)
        x = rng.normal(size=(16, num_features)).astype("float32")
        y = {"labels": (rng.random((16, len(labels))) > 0.5).astype("float32")}
        model.compile(optimizer="adam")
        model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    return model


def example_x(num_features=6):
    return np.random.default_rng(1).normal(size=(4, num_features)).astype("float32")


def write_preset(model, directory, **kwargs):
    options = {"zoo_model": "multilabel_mlp", "data": "random rows",
               "command": "kerasmtl train multilabel_mlp --data x",
               "dev_figures": {"labels": {"f1": 0.5, "loss": 0.7}},
               "example_inputs": example_x(), "print_fn": lambda line: None}
    options.update(kwargs)
    return preset_writer.save_preset(model, directory, **options)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A preset directory of a tiny trained model, and the model."""
    model = tiny_model()
    directory = write_preset(model, tmp_path_factory.mktemp("presets") / "tiny_yeast")
    return directory, model


# -- recipes -------------------------------------------------------------------------


@pytest.fixture
def recipe_model(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    def optimizer(steps_per_epoch, epochs):
        import keras

        return keras.optimizers.SGD(keras.optimizers.schedules.CosineDecay(
            0.1, decay_steps=steps_per_epoch * epochs))

    base = registry.get_entry("tabular_mtl_mlp")

    def recipe_mlp(**kwargs):
        return base.factory(**kwargs)

    registry.register_model(recipe_mlp, data=base.data, recipe={
        "epochs": 3, "batch_size": 4096, "optimizer": optimizer,
        "model_kwargs": {"hidden_units": (5,)}})
    return "recipe_mlp"


def test_settings_come_from_the_recipe_then_the_defaults(recipe_model):
    settings = training.training_settings(recipe_model)
    assert (settings.epochs, settings.batch_size) == (3, 4096)
    assert settings.sources == {"epochs": "recipe", "batch_size": "recipe",
                                "optimizer": "recipe"}
    optimizer = settings.make_optimizer(steps_per_epoch=10)
    assert type(optimizer).__name__ == "SGD"
    assert optimizer.learning_rate_schedule_is_used if hasattr(
        optimizer, "learning_rate_schedule_is_used") else True
    assert "CosineDecay" in settings.describe(10)
    given = training.training_settings(recipe_model, epochs=1, optimizer="rmsprop")
    assert (given.epochs, given.batch_size) == (1, 4096)
    assert given.sources["epochs"] == "given" and given.sources["optimizer"] == "given"
    plain = training.training_settings("tabular_mtl_mlp")
    assert (plain.epochs, plain.batch_size, plain.optimizer) == (5, 32, "adam")
    assert set(plain.sources.values()) == {"default"}


def test_recipe_trains_with_its_model_kwargs_and_says_so(recipe_model):
    lines = []
    result = training.train_zoo_model(recipe_model, "synthetic", epochs=1,
                                      print_fn=lines.append)
    assert result["model"].get_layer("trunk_0").units == 5
    assert ("training: epochs=1 (given), batch_size=4096 (recipe), "
            "optimizer=SGD(learning_rate=CosineDecay) (recipe)") in lines


def test_cli_budget_flags_default_to_none_so_the_recipe_applies():
    args = cli.command_parser().parse_args(["train", "multilabel_mlp", "--data", "synthetic"])
    assert (args.epochs, args.batch_size, args.optimizer) == (None, None, None)
    args = cli.command_parser().parse_args(["evaluate", "multilabel_mlp", "--data", "s",
                                     "--optimizer", "sgd", "--epochs", "2"])
    assert cli._recipe_options(args)["optimizer"] == "sgd"


@pytest.mark.parametrize("recipe, message", [
    ({"epochs": 0}, r"`epochs` must be an int >= 1. Received: epochs=0"),
    ({"optimizer": "adam"}, r"`optimizer` must be a callable"),
    ({"lr": 0.1}, r"unknown keys \['lr'\]"),
])
def test_invalid_recipe_is_refused(monkeypatch, recipe, message):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    def bad_recipe_model():
        """Never registered."""

    with pytest.raises(ValueError, match=message):
        registry.register_model(bad_recipe_model, recipe=recipe)


# -- save and load --------------------------------------------------------------------


def test_round_trip_gives_identical_predictions_and_a_full_card(saved, tmp_path):
    directory, model = saved
    loaded = zoo.load_preset(directory)
    x = example_x()
    np.testing.assert_allclose(loaded.predict(x, verbose=0)["labels"],
                               model.predict(x, verbose=0)["labels"], atol=1e-6)
    card = json.loads((directory / "preset.json").read_text())
    assert card["zoo_model"] == "multilabel_mlp" and card["preset"] == "tiny_yeast"
    assert card["sha256"] == preset_loader.file_sha256(directory / "model.keras")
    assert card["size_bytes"] == (directory / "model.keras").stat().st_size
    assert card["headline"] == {"labels": {"metric": "f1", "value": 0.5,
                                           "higher_is_better": True}}
    assert card["history"] == [] and card["command"].startswith("kerasmtl train")
    outputs = preset_loader.example_outputs(card)["labels"]
    np.testing.assert_allclose(outputs, model.predict(x, verbose=0)["labels"], atol=1e-6)
    # The optimizer's slots are left out: a preset predicts or starts a new run.
    assert getattr(loaded, "optimizer", None) is None
    model.save(tmp_path / "with_optimizer.keras")
    assert (tmp_path / "with_optimizer.keras").stat().st_size > card["size_bytes"] + 400
    # Written deflated (Model.save stores), nothing left beside it.
    with zipfile.ZipFile(directory / "model.keras") as archive:
        assert {m.compress_type for m in archive.infolist()} == {zipfile.ZIP_DEFLATED}
        assert "model.weights.h5" in archive.namelist()
    assert sorted(p.name for p in directory.iterdir()) == ["model.keras", "preset.json"]


def test_create_model_with_preset_checks_the_zoo_model(saved):
    directory, _ = saved
    model = zoo.create_model("multilabel_mlp", preset=str(directory))
    assert model.task_names == ["labels"]
    with pytest.raises(ValueError, match=r"is a 'multilabel_mlp' model, not a "
                                         r"'tabular_mtl_mlp' one"):
        zoo.create_model("tabular_mtl_mlp", preset=str(directory))
    with pytest.raises(ValueError, match=r"takes no factory arguments"):
        zoo.create_model("multilabel_mlp", preset=str(directory), hidden_units=(4,))


def test_resaving_keeps_the_history_and_compares(tmp_path, saved):
    directory, model = saved
    copy = tmp_path / "again"
    shutil.copytree(directory, copy)
    lines = []
    write_preset(model, copy, dev_figures={"labels": {"f1": 0.4}}, print_fn=lines.append)
    card = json.loads((copy / "preset.json").read_text())
    assert [h["headline"]["labels"]["value"] for h in card["history"]] == [0.5]
    assert lines == ["preset labels f1: 0.5000 -> 0.4000 (WORSE than the preset it "
                     "replaces)"]


def test_a_modified_model_file_is_refused_with_both_hashes(tmp_path, saved):
    directory, _ = saved
    copy = tmp_path / "tampered"
    shutil.copytree(directory, copy)
    expected = json.loads((copy / "preset.json").read_text())["sha256"]
    with open(copy / "model.keras", "ab") as f:
        f.write(b"\0")
    actual = preset_loader.file_sha256(copy / "model.keras")
    with pytest.raises(ValueError, match=rf"model file '.*tampered/model.keras' is "
                                         rf"corrupted .* sha256 is {actual}, expected "
                                         rf"{expected}"):
        zoo.load_preset(copy)


def test_a_wrong_sha256_argument_is_refused(saved):
    directory, _ = saved
    with pytest.raises(ValueError, match="sha256 is [0-9a-f]{64}, expected 0{64}"):
        zoo.load_preset(directory / "model.keras", sha256="0" * 64)
    with pytest.raises(ValueError, match="expected 64 hex digits"):
        zoo.load_preset(directory / "model.keras", sha256="abc")


def test_a_corrupted_archive_is_refused(tmp_path, saved):
    directory, _ = saved
    archive = make_archive(directory, tmp_path / "p.tar.gz")
    truncated = tmp_path / "cut.tar.gz"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    garbage = tmp_path / "junk.zip"
    garbage.write_bytes(b"not a zip file at all")
    for bad in (truncated, garbage):
        with pytest.raises(ValueError, match=rf"archive '.*{bad.name}' is corrupted"):
            zoo.load_preset(bad, cache_dir=str(tmp_path / "cache"))
    # Nothing half-extracted stays in the cache to be picked up later.
    assert not list((tmp_path / "cache" / "extracted").glob("cut-*"))


def test_an_unknown_preset_names_the_shipped_ones():
    with pytest.raises(ValueError, match=r"No preset 'nope'.*shipped preset"):
        zoo.load_preset("nope")
    with pytest.raises(ValueError, match="unsupported URL scheme 'ftp'"):
        zoo.load_preset("ftp://example.org/p.zip")


# -- URLs ---------------------------------------------------------------------------


def make_archive(directory: Path, path: Path) -> Path:
    if path.suffix == ".zip":
        with zipfile.ZipFile(path, "w") as z:
            for file in directory.iterdir():
                z.write(file, f"{directory.name}/{file.name}")
    else:
        with tarfile.open(path, "w:gz") as t:
            t.add(directory, arcname=directory.name)
    return path


@pytest.fixture
def server(tmp_path):
    """A local HTTP server over tmp_path/www; yields (base URL, request paths)."""
    root = tmp_path / "www"
    root.mkdir()
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root, requests
    httpd.shutdown()
    httpd.server_close()


def test_url_load_checks_the_hash_and_reuses_the_cache(tmp_path, saved, server):
    directory, model = saved
    base, root, requests = server
    archive = make_archive(directory, root / "tiny.tar.gz")
    digest = preset_loader.file_sha256(archive)
    cache = str(tmp_path / "cache")
    url = f"{base}/tiny.tar.gz"
    x = example_x()
    for _ in range(2):
        loaded = zoo.load_preset(f"{url}#sha256={digest}", cache_dir=cache)
        np.testing.assert_allclose(loaded.predict(x, verbose=0)["labels"],
                                   model.predict(x, verbose=0)["labels"], atol=1e-6)
    assert requests == ["/tiny.tar.gz"]  # the second load came from the cache

    with pytest.raises(ValueError, match=rf"download of '{url}'.*sha256 is {digest}, "
                                         r"expected f{64}"):
        zoo.load_preset(url, sha256="f" * 64, cache_dir=str(tmp_path / "cache2"))
    leftovers = [p for p in (tmp_path / "cache2").rglob("*") if p.is_file()]
    assert leftovers == []  # the refused download was not kept


def test_bare_keras_url_needs_a_sha256(tmp_path, saved, server):
    directory, model = saved
    base, root, _ = server
    shutil.copy(directory / "model.keras", root / "tiny.keras")
    url = f"{base}/tiny.keras"
    with pytest.raises(ValueError, match="bare .keras file with no card: give its sha256"):
        zoo.load_preset(url, cache_dir=str(tmp_path / "c"))
    digest = preset_loader.file_sha256(root / "tiny.keras")
    loaded = zoo.load_preset(url, sha256=digest, cache_dir=str(tmp_path / "c"))
    np.testing.assert_allclose(loaded.predict(example_x(), verbose=0)["labels"],
                               model.predict(example_x(), verbose=0)["labels"], atol=1e-6)


def test_file_url_of_a_zip(tmp_path, saved):
    directory, model = saved
    archive = make_archive(directory, tmp_path / "tiny.zip")
    found = zoo.get_preset(archive.as_uri(), cache_dir=str(tmp_path / "cache"))
    assert found.card["preset"] == "tiny_yeast"
    np.testing.assert_allclose(found.load().predict(example_x(), verbose=0)["labels"],
                               model.predict(example_x(), verbose=0)["labels"], atol=1e-6)


# -- fine-tuning ----------------------------------------------------------------------


def test_fine_tuning_on_new_labels_keeps_the_trunk_and_rebuilds_the_heads(saved):
    directory, source = saved
    lines = []
    for labels in (["x", "y"], ["x", "y", "z"]):  # other count; same count, other names
        target = tiny_model(labels=labels, train=False)
        kept, rebuilt = fine_tuning.transfer_weights(source, target,
                                                       print_fn=lines.append)
        assert kept == ["trunk_0"]
        assert [r.split()[0] for r in rebuilt] == ["labels_logits", "labels"]
        for old, new in zip(source.get_layer("trunk_0").get_weights(),
                            target.get_layer("trunk_0").get_weights()):
            np.testing.assert_array_equal(old, new)
        assert not np.allclose(source.get_layer("labels_logits").get_weights()[0][:, :2],
                               target.get_layer("labels_logits").get_weights()[0][:, :2])
    assert "from the preset: kept 1 layer(s): trunk_0" in lines
    assert any("labels_logits (task 'labels' changed)" in line for line in lines)
    assert any("labels_logits (shapes [(8, 3), (3,)] in the preset" in line
               for line in lines)


@pytest.mark.large  # ~25 s: kept out of the default suite's budget
def test_train_from_a_preset_says_what_it_kept(tmp_path):
    lines = []
    first = training.train_zoo_model(
        "tabular_mtl_mlp", "synthetic", epochs=1, batch_size=4096,
        save_preset=str(tmp_path / "tab"), print_fn=lines.append)
    assert first["report"] and (tmp_path / "tab" / "preset.json").is_file()
    lines.clear()
    training.train_zoo_model("tabular_mtl_mlp", "synthetic", epochs=1, batch_size=4096,
                             preset=str(tmp_path / "tab"), print_fn=lines.append)
    assert any(line.startswith("fine-tuning from preset 'tab'") for line in lines)
    assert "rebuilt 0 layer(s): none" in lines
    with pytest.raises(ValueError, match=r"--preset '.*tab' is a 'tabular_mtl_mlp' model"):
        training.train_zoo_model("multilabel_mlp", "synthetic", epochs=1,
                                 preset=str(tmp_path / "tab"), print_fn=lines.append)


def test_cli_save_preset_records_the_command(tmp_path, capsys):
    argv = ["train", "tabular_mtl_mlp", "--data", "synthetic", "--epochs", "1",
            "--batch-size", "4096", "--save", str(tmp_path / "m.keras"),
            "--export-dir", str(tmp_path / "exp"), "--save-preset", str(tmp_path / "p")]
    assert cli.main(argv) == 0
    card = json.loads((tmp_path / "p" / "preset.json").read_text())
    assert card["command"] == "kerasmtl " + " ".join(argv)
    assert "training: epochs=1 (given)" in capsys.readouterr().out
    assert cli.main(["export", "--preset", str(tmp_path / "p"), str(tmp_path / "b")]) == 0
    assert (tmp_path / "b" / "1" / "saved_model.pb").is_file()


def test_cli_zoo_save_preset_writes_what_save_preset_would_have(tmp_path, capsys):
    # Train with --save only, decide later: the card written from the file
    # holds the dev figures and example the run's own --save-preset wrote.
    assert cli.main(["train", "tabular_mtl_mlp", "--data", "synthetic", "--epochs", "1",
                     "--batch-size", "4096", "--seed", "3", "--save",
                     str(tmp_path / "m.keras"), "--export-dir", str(tmp_path / "exp"),
                     "--save-preset", str(tmp_path / "p")]) == 0
    command = "kerasmtl train tabular_mtl_mlp --data synthetic --seed 3 --save m.keras"
    argv = ["zoo", "save-preset", "tabular_mtl_mlp", str(tmp_path / "m.keras"),
            str(tmp_path / "q"), "--data", "synthetic", "--seed", "3",
            "--command", command, "--notes", "written later"]
    assert cli.main(argv) == 0
    assert f"saved preset: {tmp_path / 'q'}" in capsys.readouterr().out
    direct = json.loads((tmp_path / "p" / "preset.json").read_text())
    later = json.loads((tmp_path / "q" / "preset.json").read_text())
    assert later["command"] == command and later["notes"] == "written later"
    assert later["zoo_model"] == "tabular_mtl_mlp" and later["data"] == direct["data"]
    for task, metrics in direct["dev_figures"].items():
        for metric, value in metrics.items():
            assert later["dev_figures"][task][metric] == pytest.approx(value, rel=1e-5,
                                                                       abs=1e-6)
    assert later["example"]["inputs"] == direct["example"]["inputs"]
    outputs = zoo.load_preset(tmp_path / "q").predict(
        preset_loader.example_inputs(later), verbose=0)
    expected = preset_loader.example_outputs(direct)
    assert sorted(outputs) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(outputs[key], value, rtol=1e-5, atol=1e-6, err_msg=key)


def test_cli_zoo_save_preset_refuses_a_missing_file(tmp_path, capsys):
    assert cli.main(["zoo", "save-preset", "tabular_mtl_mlp", str(tmp_path / "none.keras"),
                     str(tmp_path / "q"), "--data", "synthetic", "--command", "x"]) == 2
    err = capsys.readouterr().err
    assert "No model file" in err and "none.keras" in err and "--save FILE" in err
    assert not (tmp_path / "q").exists()


# -- shipped presets -------------------------------------------------------------------


def test_zoo_presets_lists_the_shipped_ones(capsys):
    names = zoo.list_presets()
    assert "multilabel_mlp_yeast" in names
    assert cli.main(["zoo", "presets"]) == 0
    out = capsys.readouterr().out
    for name in names:
        assert name in out
    assert "multilabel_mlp" in out and "labels f1=" in out


@pytest.mark.parametrize("name", zoo.list_presets())
def test_each_shipped_preset_predicts_its_own_example(name):
    preset = zoo.get_preset(name)
    card = preset.card
    assert preset.model_path.stat().st_size <= 6 * 1024 * 1024
    model = zoo.create_model(card["zoo_model"], preset=name)
    x = preset_loader.example_inputs(card)
    assert x is not None, f"preset '{name}' has no example on its card"
    expected = preset_loader.example_outputs(card)
    got = model.predict(x, verbose=0)
    for task, value in expected.items():
        if value.dtype.kind in "fc":
            np.testing.assert_allclose(got[task], value, atol=1e-4)
        else:
            np.testing.assert_array_equal(got[task], value)
    assert card["dev_figures"] and card["headline"]


def test_shipped_presets_fit_the_size_budget():
    total = sum(p.stat().st_size for p in preset_loader.PRESETS_DIR.rglob("*")
                if p.is_file())
    assert total <= 15 * 1024 * 1024
