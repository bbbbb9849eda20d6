"""Dataset -> MobileNet -> ONNX -> int8 TFLite -> TFLM C array, every stage checked.

This package's `__init__` stays free of heavy imports: `pipeline.preprocess` is
used on the device (no torch there) and must import with numpy and Pillow only.
"""

__version__ = "0.1.0"
