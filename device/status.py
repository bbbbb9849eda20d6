"""The runner's shared state, as the health endpoint reports it."""

from __future__ import annotations

import threading
from typing import Any

from .metrics import Metrics

STATES = ("starting", "running", "reconnecting", "stopped")


class RunStatus:
    def __init__(self, source: str, metrics: Metrics) -> None:
        self._lock = threading.Lock()
        self.source = source
        self.metrics = metrics
        self.state = "starting"
        self.frames = 0
        self.errors = 0
        self.reconnects = 0
        self.last_label = ""
        self.last_score = 0.0
        self.last_error = ""

    def set_state(self, state: str) -> None:
        assert state in STATES, state
        with self._lock:
            if state == "reconnecting" and self.state != "reconnecting":
                self.reconnects += 1
            self.state = state

    def error(self, message: str) -> None:
        with self._lock:
            self.errors += 1
            self.last_error = message

    def classified(self, label: str, score: float) -> None:
        with self._lock:
            self.frames += 1
            self.last_label, self.last_score = label, score
            if self.state != "stopped":
                self.state = "running"

    def health(self) -> dict[str, Any]:
        with self._lock:
            d: dict[str, Any] = {
                "state": self.state,
                "frames": self.frames,
                "last_label": self.last_label,
                "last_score": round(self.last_score, 4),
                "source": self.source,
                "errors": self.errors,
                "reconnects": self.reconnects,
                "last_error": self.last_error,
            }
        d["fps"] = round(self.metrics.fps(), 2)
        d["latency_ms"] = self.metrics.latency()
        return d
