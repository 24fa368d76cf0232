"""Every registered zoo model: forward, one train step, save/load, no NaN."""

import numpy as np
import pytest

import zoo
from harness import assert_finite_logs, run_model_saving_test
from zoo.registry import get_entry

# The Transformer tagger (~20 s) runs with -m large; the BiLSTM tagger keeps
# the taggers' shared code in the default suite.
SLOW = {"pos_ner_transformer"}


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.large) if n in SLOW else n for n in zoo.list_models()
])
def test_every_registered_model(name, tmp_path):
    entry = get_entry(name)
    assert entry.example_data is not None, f"{name} registers no example_data"
    x, y = entry.example_data()
    model = zoo.create_model(name)
    model.compile(optimizer="adam")
    outputs = model.predict(x, verbose=0)
    assert all(np.all(np.isfinite(v)) for v in outputs.values())
    assert_finite_logs(model.fit(x, y, epochs=1, verbose=0))
    run_model_saving_test(model, x, tmp_path)


def test_registry_errors_and_overrides():
    assert "tabular_mtl_mlp" in zoo.list_models()
    with pytest.raises(ValueError, match=r"No zoo model named 'tabular_mlp'.*Did you mean"):
        zoo.create_model("tabular_mlp")
    with pytest.raises(ValueError, match=r"does not take \['colour'\]"):
        zoo.create_model("tabular_mtl_mlp", colour=1)
    model = zoo.create_model("tabular_mtl_mlp", hidden_units=(4,))
    assert model.get_layer("trunk_0").units == 4
    assert "tabular_mtl_mlp" in zoo.model_card("tabular_mtl_mlp")


def test_training_recipe_trains_saves_and_exports(tmp_path):
    from zoo.training import train_zoo_model

    lines = []
    result = train_zoo_model(
        "tabular_mtl_mlp", "synthetic", epochs=1, save_path=str(tmp_path / "m.keras"),
        export_dir=str(tmp_path / "export"), print_fn=lines.append)
    assert set(result["report"]) == {"species", "size", "tags"}
    assert (tmp_path / "m.keras").exists() and (tmp_path / "export" / "1").is_dir()
    assert any(line.startswith("  species ") for line in lines)
    with pytest.raises(ValueError, match="--data synthetic only"):
        train_zoo_model("tabular_mtl_mlp", "mydata.csv")


@pytest.mark.parametrize("kwargs, message", [
    ({"epochs": 0}, r"`epochs`. Expected an int >= 1. Received: epochs=0"),
    ({"epochs": -3}, r"Received: epochs=-3"),
    ({"batch_size": 0}, r"`batch_size`. Expected an int >= 1. Received: batch_size=0"),
    ({"dev_fraction": 0.2}, r"'tabular_mtl_mlp' reads its dev set from the data; "
                            r"--dev-fraction \(dev_fraction=0.2\) does not apply"),
])
def test_training_recipe_refuses_a_degenerate_budget_before_training(tmp_path, kwargs,
                                                                     message):
    from zoo.training import compare_zoo_model, train_zoo_model

    lines = []
    with pytest.raises(ValueError, match=message):
        train_zoo_model("tabular_mtl_mlp", "synthetic", export_dir=str(tmp_path / "x"),
                        print_fn=lines.append, **kwargs)
    with pytest.raises(ValueError, match=message):
        compare_zoo_model("tabular_mtl_mlp", "synthetic", print_fn=lines.append, **kwargs)
    assert lines == [] and not (tmp_path / "x").exists()


def test_training_recipe_refuses_data_without_examples(monkeypatch):
    import dataclasses

    import tensorflow as tf

    from zoo import registry, training

    entry = get_entry("tabular_mtl_mlp")
    rows = (np.zeros((3, 8)), {})
    for train, dev, part in ((tf.data.Dataset.range(0).batch(4), rows, "train"),
                             (rows, (np.zeros((0, 8)), {}), "dev")):
        data = training.TrainingData(train, dev, [], summary="nothing")
        monkeypatch.setitem(registry._REGISTRY, entry.name, dataclasses.replace(
            entry, data=lambda spec, data=data, **kwargs: data))
        with pytest.raises(ValueError, match=rf"--data 'synthetic' gives zoo model "
                           rf"'tabular_mtl_mlp' no {part} examples \(nothing\)"):
            training.load_training_data("tabular_mtl_mlp", "synthetic")
