"""A reference model for measurements: Keras MobileNet V1 (width 0.25, 96x96x3, 1000
classes, the ImageNet head), full-int8 through the TFLite converter.

    python firmware/tools/keras_mobilenet_v1.py OUT.tflite [--alpha 0.25] [--size 96]

Weights are random (seeded) and calibration uses random images: good for code size, arena
and instruction counts, which do not depend on the weight values; not for accuracy. Then
`python firmware/tools/tflm_model.py OUT.tflite DIR` and `make run-qemu FW_MODEL_DIR=DIR`.
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
    ap.add_argument("--alpha", type=float, default=0.25)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--classes", type=int, default=1000)
    a = ap.parse_args(argv)

    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    # The TF-slim mobilenet_v1_<alpha>_<size> head: average pool over the last feature map,
    # 1x1 convolution to the classes, reshape (AVERAGE_POOL_2D as in TFLM's person_detect,
    # rather than Keras' MEAN). Int8 logits out, like the pipeline's models: the
    # converter's int8 softmax over 1000 classes aborts the tflite-micro host runtime
    # (tflite_micro 0.dev20261023). A fixed batch of 1 keeps shapes static.
    inp = tf.keras.Input(shape=(a.size, a.size, 3), batch_size=1)
    base = tf.keras.applications.MobileNet(input_tensor=inp, alpha=a.alpha, weights=None,
                                           include_top=False)
    x = base.output
    x = tf.keras.layers.AveragePooling2D(pool_size=x.shape[1:3])(x)
    x = tf.keras.layers.Conv2D(a.classes, 1)(x)
    x = tf.keras.layers.Reshape((a.classes,))(x)
    model = tf.keras.Model(inp, x)
    rng = np.random.default_rng(0)
    a.out.write_bytes(keras_full_int8(model, (rng.uniform(-1, 1, size=(1, a.size, a.size, 3)) for _ in range(20))))
    print(f"wrote {a.out} ({a.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
