"""User-facing errors.

A `StreamguardError` is a problem the user can fix (a bad URL, a missing checkpoint,
an invalid config value). The CLI prints its message as one line and exits non-zero,
without a traceback; anything else is a bug and keeps its traceback.
"""


class StreamguardError(Exception):
    """A problem with the user's input, reported as one clear line."""


class ConfigError(StreamguardError):
    """The configuration is invalid; the message names the field."""


class CheckpointError(StreamguardError):
    """A checkpoint is missing, unsafe, or does not fit the model."""


class SourceError(StreamguardError):
    """A stream cannot be opened or decoded."""
