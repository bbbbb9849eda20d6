"""Raspberry Pi runner: live camera classification with a web view.

`python -m device run|collect|bench`. Needs numpy, Pillow and ai-edge-litert (or
tflite-runtime); OpenCV and picamera2 only for the sources that use them. The
preprocessing is `pipeline.preprocess`, shipped beside this package; nothing else
from `pipeline` is imported here (the Pi has no torch).
"""

__version__ = "0.1.0"
