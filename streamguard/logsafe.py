"""Log records that cannot forge lines or leak a URL's secrets.

Why: a stream's URL and name come from operators and API clients. A newline in one
would start what looks like a log record of its own (a forged `ERROR` line, say), an
escape sequence would drive the reader's terminal, and a library's message may quote
a URL with its password. `SafeFormatter` renders each record's message with every
`scheme://...` in it redacted (`redact_text`) and every control character escaped, so
one record is one line. A traceback or stack keeps its lines, each indented, so that
only a record's first line starts at the left margin: no line of it can pass for a
record. `configure_logging` installs it where a command sets logging up (`cli`'s
`run_command`, which the supervisor's worker processes run too).
"""

from __future__ import annotations

import logging

from streamguard.redact import escape_control, redact_text

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CONTINUATION = "    "  # in front of each line of a traceback or stack


def safe_line(text: str) -> str:
    """`text` as one line that is safe to print or log: URLs redacted, controls escaped."""
    return escape_control(redact_text(text))


class SafeFormatter(logging.Formatter):
    """A `logging.Formatter` whose every record is one safe line (plus indented traceback lines)."""

    def format(self, record: logging.LogRecord) -> str:
        # What Formatter.format does, but with the message made safe and without caching
        # the traceback text on the record (other handlers, pytest's too, format it their way).
        record.message = safe_line(record.getMessage())
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        text = self.formatMessage(record)
        blocks = []
        if record.exc_info:
            blocks.append(self.formatException(record.exc_info))
        elif record.exc_text:
            blocks.append(record.exc_text)
        if record.stack_info:
            blocks.append(self.formatStack(record.stack_info))
        for block in blocks:
            text += "".join("\n" + CONTINUATION + safe_line(line) for line in block.splitlines())
        return text


def configure_logging(level: str | int = "INFO") -> None:
    """Log to stderr through `SafeFormatter` at `level` (what `logging.basicConfig` would do, made safe)."""
    handler = logging.StreamHandler()
    handler.setFormatter(SafeFormatter(LOG_FORMAT, datefmt="%H:%M:%S"))
    logging.basicConfig(level=level, handlers=[handler])
