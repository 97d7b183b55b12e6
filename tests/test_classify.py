import json

import numpy as np
import pytest

from pipeline.classify import CLASS_NAMES, INPUT_CONTRACT, card_path, file_sha256, load_classifier, softmax
from pipeline.errors import ExitCode, ModelError

keras = pytest.importorskip("keras")


def save_model_with_card(path, model, temperature=2.0):
    model.save(path)
    card = {"file": {"sha256": file_sha256(path)}, "calibration": {"temperature": temperature},
            "input": INPUT_CONTRACT, "classes": list(CLASS_NAMES)}
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


def test_damaged_or_replaced_model_is_refused(tmp_path):
    path = save_model_with_card(tmp_path / "m.keras", tiny_model())
    with open(path, "ab") as handle:
        handle.write(b"tampered")
    with pytest.raises(ModelError, match="does not match its card"):
        load_classifier(path)


def test_damaged_archive_with_matching_card_is_a_model_error(tmp_path):
    path = tmp_path / "m.keras"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    card = {"file": {"sha256": file_sha256(path)}, "calibration": {"temperature": 1.0},
            "input": INPUT_CONTRACT, "classes": list(CLASS_NAMES)}
    card_path(path).write_text(json.dumps(card))
    with pytest.raises(ModelError, match="cannot be loaded"):
        load_classifier(path)


def test_card_with_other_input_contract_is_refused(tmp_path):
    path = save_model_with_card(tmp_path / "m.keras", tiny_model())
    card = json.loads(card_path(path).read_text())
    card["input"]["polarity"] = "ink_low"
    card_path(path).write_text(json.dumps(card))
    with pytest.raises(ModelError, match="expects input"):
        load_classifier(path)


def test_model_with_code_inside_is_not_deserialized(tmp_path):
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    x = keras.layers.Flatten()(x)
    path = save_model_with_card(tmp_path / "m.keras", keras.Model(inputs, keras.layers.Dense(11)(x)))
    with pytest.raises(ModelError, match="cannot be loaded"):
        load_classifier(path)
