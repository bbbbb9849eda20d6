"""`python -m bench` (`make bench`): the performance figures, measured side by side in one run.

Every timed figure is the median of repeated runs, the runs of the figures a row compares
interleaved in the same loop, and every figure names the machine it came from
(`machines` in `bench.json`). Deterministic figures (bytes, arena, QEMU instruction counts)
are measured once and say so.
"""

__version__ = "0.1.0"
