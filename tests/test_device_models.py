"""Models outside a build: float32 and uint8 `.tflite` files with a labels file.

Tiny Keras models are converted here by TensorFlow's converter (float, and full-integer with
uint8 input/output), ending in SOFTMAX as published classifiers do. The runner's classifier
must feed each the input its own quantisation parameters ask for and return the model's
probabilities (not softmaxed twice), matching Keras on the same preprocessed pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from device.inference import Classifier, top_k
from device.model import ModelSpec
from pipeline.preprocess import Preprocess, normalize

tf = pytest.importorskip("tensorflow")

LABELS = ["red", "green", "blue"]


@pytest.fixture(scope="module")
def keras_and_images() -> tuple[object, list[np.ndarray]]:
    rng = np.random.default_rng(0)
    images = []
    for i in range(30):  # frames of varying size dominated by one colour channel each
        img = rng.integers(0, 90, (48 + i, 64 + 2 * i, 3), dtype=np.uint8)
        img[..., i % 3] += np.uint8(120 + i)
        images.append(img)
    spec = Preprocess(size=32)
    x = np.stack([normalize(spec(im), spec) for im in images])
    y = np.array([i % 3 for i in range(len(images))])
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([
        tf.keras.Input((32, 32, 3)),
        tf.keras.layers.Conv2D(4, 3, strides=2, activation="relu"),
        tf.keras.layers.GlobalAveragePooling2D(),
        tf.keras.layers.Dense(3, activation="softmax"),
    ])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=40, verbose=0)
    return model, images


def convert(model: object, path: Path, images: list[np.ndarray], integer: bool) -> Path:
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if integer:
        spec = Preprocess(size=32)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([normalize(spec(im), spec)[None]] for im in images)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.uint8
        conv.inference_output_type = tf.uint8
    path.write_bytes(conv.convert())
    return path


@pytest.mark.parametrize("integer", [False, True], ids=["float32", "uint8"])
def test_bare_model_matches_keras(keras_and_images: tuple, tmp_path: Path, integer: bool) -> None:
    model, images = keras_and_images
    tflite = convert(model, tmp_path / "m.tflite", images, integer)
    clf = Classifier(ModelSpec(tflite, LABELS, None, None, None), threads=1)
    assert clf.input_dtype == (np.uint8 if integer else np.float32)
    spec = Preprocess(size=32)
    expected = model.predict(np.stack([normalize(spec(im), spec) for im in images]), verbose=0)
    got = np.stack([clf.probabilities(clf.invoke(clf.input_for(clf.preprocess(im)))) for im in images])
    assert np.allclose(got.sum(axis=1), 1.0, atol=0.02)  # the model's own softmax, not a second one
    assert np.allclose(got, expected, atol=0.03 if integer else 1e-5)
    assert len(set(expected.argmax(axis=1))) == 3  # the model tells the classes apart
    agree = np.mean(got.argmax(axis=1) == expected.argmax(axis=1))
    assert agree >= (0.9 if integer else 1.0)
    tk = top_k(got[0], LABELS, 3)
    assert tk.labels[0] == LABELS[int(got[0].argmax())] and tk.scores == sorted(tk.scores, reverse=True)
