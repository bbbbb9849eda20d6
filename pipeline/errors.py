"""One exception type for problems the user can fix; the CLI prints it on one line."""


class PipelineError(Exception):
    """A user-facing error: the message says what is wrong and what to do next."""


class GateError(PipelineError):
    """A verification gate failed: which stage, by how much, and what to try."""

    def __init__(self, message: str, measured: dict | None = None) -> None:
        super().__init__(message)
        self.measured = measured or {}
