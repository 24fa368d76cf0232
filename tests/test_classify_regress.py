"""TF Serving's Classify and Regress signatures (`export_saved_model(...,
example_signatures=True)`) and the `:classify` / `:regress` REST APIs."""

import base64
import re
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasmtl as mtl
from kerasmtl import cli
from kerasmtl.export import export_saved_model
from kerasmtl.serving import Client, ServingError
from kerasmtl.serving.examples import parse_example_request
from kerasmtl.serving.loaded_version import _read_signature_defs
from kerasmtl.serving.server import create_app

with warnings.catch_warnings():  # starlette's note about its httpx backend
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    keras.utils.set_random_seed(0)
    tasks = [mtl.tasks.Classification("species", num_classes=3),
             mtl.tasks.Regression("size"),
             mtl.tasks.MultiLabel("tags", labels=["red", "green", "blue"])]
    x = keras.Input((4,), name="features")
    model = mtl.sharing.hard_sharing(x, keras.layers.Dense(8, "relu")(x), tasks)
    base = tmp_path_factory.mktemp("examples")
    version_dir = export_saved_model(model, base, example_signatures=True)
    return model, str(base), version_dir


X = np.array([[0.5, -1.0, 2.0, 0.25], [1.5, 0.0, -0.5, 3.0]], "float32")
EXAMPLES = [{"features": row.tolist()} for row in X]


def test_export_adds_classify_and_regress_signatures_with_their_methods(exported):
    _, _, version_dir = exported
    methods = {k: v.method_name for k, v in _read_signature_defs(version_dir).items()
               if not k.startswith("__")}
    assert methods == {
        "serving_default": "tensorflow/serving/predict",
        "classify_species": "tensorflow/serving/classify",
        "regress_size": "tensorflow/serving/regress",
        "classify_tags": "tensorflow/serving/classify",
    }


def test_classify_and_regress_match_the_model(exported):
    model, base, _ = exported
    expected = model.predict(X, verbose=0)
    client = TestClient(create_app(base, "tab"))
    answer = client.post("/v1/models/tab:classify",
                         json={"signature_name": "classify_species", "examples": EXAMPLES})
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [[c for c, _ in row] for row in results] == [["0", "1", "2"]] * 2
    np.testing.assert_allclose([[s for _, s in row] for row in results],
                               expected["species"], rtol=1e-5, atol=1e-6)
    tags = client.post("/v1/models/tab:classify",
                       json={"signature_name": "classify_tags", "examples": EXAMPLES}).json()
    assert [c for c, _ in tags["results"][0]] == ["red", "green", "blue"]
    np.testing.assert_allclose([[s for _, s in row] for row in tags["results"]],
                               expected["tags"], rtol=1e-5, atol=1e-6)
    # The context's features go to every example that lacks them.
    answer = client.post("/v1/models/tab:regress", json={
        "signature_name": "regress_size", "context": {"features": X[0].tolist()},
        "examples": [{}, {"features": X[1].tolist()}]})
    assert answer.status_code == 200, answer.text
    np.testing.assert_allclose(answer.json()["results"], expected["size"].reshape(-1),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("verb, body, message", [
    ("classify", {"examples": EXAMPLES},
     "Expected classify signature method_name to be tensorflow/serving/classify. Was: "
     "tensorflow/serving/predict.*classify signatures: \\['classify_species', "
     "'classify_tags'\\]"),
    ("regress", {"signature_name": "classify_species", "examples": EXAMPLES},
     "method_name to be tensorflow/serving/regress.*\\['regress_size'\\]"),
    ("classify", {"signature_name": "classify_species", "examples": [{"other": [1.0]}]},
     "features"),
    ("classify", {"signature_name": "classify_species",
                  "examples": [{"features": [1, 2, 3, 4]}]},
     "write float values with a decimal point"),
    ("classify", {"signature_name": "classify_species", "examples": []},
     "non-empty list"),
    ("classify", {"signature_name": "classify_species",
                  "examples": [{"features": [1.0, True, 2.0, 3.0]}]},
     "examples\\[0\\]: feature 'features' must be numbers"),
    ("classify", {"signature_name": "nope", "examples": EXAMPLES}, '"nope" not found'),
])
def test_bad_requests_get_400_with_what_to_do(exported, verb, body, message):
    _, base, _ = exported
    answer = TestClient(create_app(base, "tab")).post(f"/v1/models/tab:{verb}", json=body)
    assert answer.status_code == 400, answer.text
    assert re.search(message, answer.json()["error"]), answer.json()["error"]


def test_examples_json_follows_tf_serving_types():
    _, (proto,) = parse_example_request(
        b'{"examples": [{"f": [1.5, 2], "i": 3, "s": "ab", '
        b'"b": {"b64": "' + base64.b64encode(b"\x00\x01") + b'"}}]}', "classify")
    example = tf.train.Example.FromString(proto)
    feature = example.features.feature
    assert list(feature["f"].float_list.value) == [1.5, 2.0]
    assert list(feature["i"].int64_list.value) == [3]
    assert list(feature["s"].bytes_list.value) == [b"ab"]
    assert list(feature["b"].bytes_list.value) == [b"\x00\x01"]


def test_client_reads_results_and_the_documented_result(monkeypatch):
    client = Client("http://127.0.0.1:1", "tab")
    sent = []
    for key in ("results", "result"):
        monkeypatch.setattr(client, "_request", lambda url, payload, key=key: (
            sent.append((url, payload)) or {key: [[["0", 0.25], ["1", 0.75]]]}))
        assert client.classify([{"features": [1.0]}], "classify_species") == [
            [("0", 0.25), ("1", 0.75)]]
    assert sent[0][0].endswith("/v1/models/tab:classify")
    assert sent[0][1] == {"signature_name": "classify_species",
                          "examples": [{"features": [1.0]}]}
    monkeypatch.setattr(client, "_request", lambda url, payload: {"results": [0.5, 1.5]})
    np.testing.assert_allclose(client.regress([{}, {}], "regress_size"), [0.5, 1.5])
    monkeypatch.setattr(client, "_request", lambda url, payload: {"outputs": []})
    with pytest.raises(ServingError, match="without 'results'"):
        client.regress([{}], "regress_size")


def test_models_a_tf_example_cannot_carry_are_refused(tmp_path):
    task = mtl.tasks.Classification("c", num_classes=2)
    x = keras.Input((None, 3), name="sequence")
    model = mtl.sharing.hard_sharing(
        x, keras.layers.GlobalAveragePooling1D()(x), [task])
    with pytest.raises(ValueError, match="input 'sequence' has shape.*fixed shape"):
        export_saved_model(model, tmp_path, example_signatures=True)
    assert not list(tmp_path.iterdir())  # nothing written


def test_cli_export_example_signatures(exported, tmp_path, capsys):
    model, _, _ = exported
    path = tmp_path / "m.keras"
    model.save(path)
    assert cli.main(["export", str(path), str(tmp_path / "out"),
                     "--example-signatures"]) == 0
    version_dir = capsys.readouterr().out.strip().splitlines()[-1]
    assert "classify_species" in _read_signature_defs(version_dir)


def test_grpc_classify_and_regress_through_the_official_stub(exported):
    import grpc
    from tensorflow_serving.apis import (
        classification_pb2,
        prediction_service_pb2_grpc,
        regression_pb2,
    )

    from kerasmtl.serving.grpc_server import create_grpc_server

    model, base, _ = exported
    expected = model.predict(X, verbose=0)
    app = create_app(base, "tab")
    server, port = create_grpc_server(app.state.manager, port=0)
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

    def example(row):
        feature = tf.train.Feature(float_list=tf.train.FloatList(value=row.tolist()))
        return tf.train.Example(features=tf.train.Features(feature={"features": feature}))

    try:
        request = classification_pb2.ClassificationRequest()
        request.model_spec.name = "tab"
        request.model_spec.signature_name = "classify_species"
        request.input.example_list.examples.extend([example(row) for row in X])
        response = stub.Classify(request, timeout=30)
        assert response.model_spec.signature_name == "classify_species"
        scores = [[c.score for c in row.classes] for row in response.result.classifications]
        np.testing.assert_allclose(scores, expected["species"], rtol=1e-5, atol=1e-6)
        assert [c.label for c in response.result.classifications[0].classes] == \
            ["0", "1", "2"]

        request = regression_pb2.RegressionRequest()
        request.model_spec.name = "tab"
        request.model_spec.signature_name = "regress_size"
        listed = request.input.example_list_with_context
        listed.context.CopyFrom(example(X[1]))  # the second example takes it
        listed.examples.extend([example(X[0]), tf.train.Example()])
        response = stub.Regress(request, timeout=30)
        np.testing.assert_allclose([r.value for r in response.result.regressions],
                                   expected["size"].reshape(-1), rtol=1e-5, atol=1e-6)

        request.model_spec.signature_name = "serving_default"
        with pytest.raises(grpc.RpcError) as info:
            stub.Regress(request, timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "['regress_size']" in info.value.details()
    finally:
        channel.close()
        server.stop(grace=None).wait(10)
