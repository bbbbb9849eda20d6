"""One exception type for problems the user can fix; the CLI prints it on one line."""


class DeviceError(Exception):
    """A user-facing error: the message says what is wrong and what to do next."""


class SourceError(DeviceError):
    """A frame source failed to open or read; live sources are retried with backoff."""
