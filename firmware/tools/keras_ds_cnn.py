"""MLPerf Tiny's keyword-spotting model, DS-CNN, full-int8 through the TFLite converter: a
reference model for the latency cost model's published-latency check (docs/LATENCY.md).

    python firmware/tools/keras_ds_cnn.py OUT.tflite

The layers of mlcommons/tiny benchmark/training/keyword_spotting/keras_model.py
(`ds_cnn`): 49x10x1 MFCC input, Conv2D 64 (10x4) stride 2 'same' + BN + ReLU, 4 x
(DepthwiseConv2D 3x3 'same' + BN + ReLU, Conv2D 64 1x1 + BN + ReLU), AveragePooling2D (24x5),
Flatten, Dense 12, softmax. Weights are random (seeded) and calibration uses random inputs:
good for instruction counts, which do not depend on the weight values; not for accuracy.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from pipeline.convert import keras_full_int8  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    a = ap.parse_args(argv)

    import tensorflow as tf
    from tensorflow.keras import layers

    tf.keras.utils.set_random_seed(0)
    inp = tf.keras.Input(shape=(49, 10, 1), batch_size=1)
    x = layers.Conv2D(64, (10, 4), strides=(2, 2), padding="same")(inp)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    for _ in range(4):
        x = layers.DepthwiseConv2D((3, 3), padding="same")(x)
        x = layers.ReLU()(layers.BatchNormalization()(x))
        x = layers.Conv2D(64, (1, 1), padding="same")(x)
        x = layers.ReLU()(layers.BatchNormalization()(x))
    x = layers.AveragePooling2D(pool_size=(24, 5))(x)
    x = layers.Flatten()(x)
    x = layers.Dense(12, activation="softmax")(x)
    model = tf.keras.Model(inp, x)
    rng = np.random.default_rng(0)
    a.out.write_bytes(keras_full_int8(model, (rng.uniform(-1, 1, size=(1, 49, 10, 1)) for _ in range(20))))
    print(f"wrote {a.out} ({a.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
