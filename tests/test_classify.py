import json
import subprocess
import sys

import numpy as np
import pytest

from pipeline.classify import (CLASS_NAMES, INPUT_CONTRACT, card_path, file_sha256, load_classifier, runtime_path,
                               softmax)
from pipeline.cli import main
from pipeline.errors import ExitCode, ModelError
from pipeline.train import export_runtime, export_saved_model

keras = pytest.importorskip("keras")


def save_model_with_card(path, model, temperature=2.0):
    """A trained model as `digits train` leaves it: Keras file, ONNX export, card naming both."""
    model.save(path)
    card = {"file": {"sha256": file_sha256(path)}, "runtime": export_runtime(model, path),
            "calibration": {"temperature": temperature}, "input": INPUT_CONTRACT, "classes": list(CLASS_NAMES)}
    card_path(path).write_text(json.dumps(card))
    return path


def tiny_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Flatten()(inputs)
    return keras.Model(inputs, keras.layers.Dense(len(CLASS_NAMES))(x))


def test_predicts_calibrated_probabilities_in_batches(tmp_path):
    model = tiny_model()
    path = save_model_with_card(tmp_path / "m.keras", model, temperature=2.0)
    classifier = load_classifier(path, batch_size=7)
    crops = np.random.default_rng(0).random((20, 28, 28)).astype(np.float32)
    probs = classifier.predict(crops)
    assert probs.shape == (20, 11)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    expected = softmax(model.predict(crops[..., None], verbose=0), 2.0)
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    assert classifier.predict(np.zeros((0, 28, 28), np.float32)).shape == (0, 11)
    with pytest.raises(ValueError, match="shape"):
        classifier.predict(np.zeros((3, 20, 20), np.float32))


def test_missing_model_says_how_to_rebuild(tmp_path):
    with pytest.raises(ModelError, match="make train") as info:
        load_classifier(tmp_path / "absent.keras")
    assert info.value.exit_code == ExitCode.could_not_run


@pytest.mark.parametrize("which", [lambda path: path, runtime_path])
def test_damaged_or_replaced_model_is_refused(tmp_path, which):
    path = save_model_with_card(tmp_path / "m.keras", tiny_model())
    with open(which(path), "ab") as handle:
        handle.write(b"tampered")
    with pytest.raises(ModelError, match="does not match its card"):
        load_classifier(path)


def test_missing_runtime_file_or_entry_says_how_to_rebuild(tmp_path):
    path = save_model_with_card(tmp_path / "m.keras", tiny_model())
    runtime_path(path).unlink()
    with pytest.raises(ModelError, match="m.onnx not found.*make train"):
        load_classifier(path)
    card = json.loads(card_path(path).read_text())
    del card["runtime"]
    card_path(path).write_text(json.dumps(card))
    with pytest.raises(ModelError, match="lacks 'runtime'.*make train"):
        load_classifier(path)


def test_damaged_runtime_file_with_matching_card_is_a_model_error(tmp_path):
    path = save_model_with_card(tmp_path / "m.keras", tiny_model())
    runtime_path(path).write_bytes(b"\x08\x07 not really a graph")
    card = json.loads(card_path(path).read_text())
    card["runtime"]["sha256"] = file_sha256(runtime_path(path))
    card_path(path).write_text(json.dumps(card))
    with pytest.raises(ModelError, match="m.onnx cannot be loaded"):
        load_classifier(path)


def test_running_the_model_leaves_tensorflow_unimported(tmp_path):
    """The batch job runs the ONNX file: no Keras archive (code and all) is deserialized."""
    path = save_model_with_card(tmp_path / "m.keras", tiny_model())
    script = ("import sys, numpy as np; from pipeline.classify import load_classifier; "
              f"load_classifier({str(path)!r}).predict(np.zeros((3, 28, 28), np.float32)); "
              "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_card_with_other_input_contract_is_refused(tmp_path):
    path = save_model_with_card(tmp_path / "m.keras", tiny_model())
    card = json.loads(card_path(path).read_text())
    card["input"]["polarity"] = "ink_low"
    card_path(path).write_text(json.dumps(card))
    with pytest.raises(ModelError, match="expects input"):
        load_classifier(path)


def test_export_of_a_saved_model_matches_and_refuses_code_inside(tmp_path):
    model = tiny_model()
    path = save_model_with_card(tmp_path / "m.keras", model)
    runtime_path(path).unlink()
    entry = export_saved_model(path)
    assert json.loads(card_path(path).read_text())["runtime"] == entry
    assert entry["sha256"] == file_sha256(runtime_path(path))
    crops = np.random.default_rng(1).random((5, 28, 28)).astype(np.float32)
    np.testing.assert_allclose(load_classifier(path).predict(crops),
                               softmax(model.predict(crops[..., None], verbose=0), 2.0), atol=1e-5)

    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    x = keras.layers.Flatten()(x)
    coded = save_model_with_card(tmp_path / "coded.keras", keras.Model(inputs, keras.layers.Dense(11)(x)))
    with pytest.raises(ModelError, match="cannot be loaded"):
        export_saved_model(coded)


def test_digits_export_writes_the_runtime_file_or_says_why_not(tmp_path, capsys):
    path = save_model_with_card(tmp_path / "m.keras", tiny_model())
    runtime_path(path).unlink()
    assert main(["export", "--model", str(path)]) == ExitCode.ok
    assert "m.onnx" in capsys.readouterr().err
    load_classifier(path)
    card_path(path).unlink()
    assert main(["export", "--model", str(path)]) == ExitCode.could_not_run
    assert "m.card.json" in capsys.readouterr().err
