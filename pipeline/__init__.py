"""Dataset -> MobileNet -> ONNX -> int8 TFLite -> TFLM C array, every stage checked.

This package's `__init__` stays free of heavy imports: `pipeline.preprocess` is
used on the device (no torch there) and must import with numpy and Pillow only.
"""

import os

# OpenMP threads that spin while waiting make PyTorch on a busy 2-core machine up to 10x
# slower; passive waiting costs nothing measurable when the machine is idle. Must be set
# before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
