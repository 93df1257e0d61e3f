"""Logging for people (text) or machines (one JSON object per line), with every known secret masked.

Masking happens in the formatter, after the message is rendered, so a secret that reaches a log call by any road
(an exception text, a library's debug line) is still replaced by ***.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from .secret import mask


class _TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(message)s", "%Y-%m-%dT%H:%M:%SZ")
        self.converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        return mask(super().format(record))


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
               "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()}
        doc.update(getattr(record, "fields", {}))
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return mask(json.dumps(doc, default=str))


def setup(fmt: str = "text", level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)  # libraries stay quiet unless they warn
    logging.getLogger("modelsync").setLevel(_level(level))


def _level(level: str) -> int:
    """A level name or number; anything else is INFO. main() sets logging up from the raw env before the config is
    validated, so a bad MODEL_SYNC_LOG_LEVEL must not crash here: config reports it as a problem, one line."""
    text = str(level).strip()
    if text.isdigit():
        return int(text)
    number = logging.getLevelName(text.upper())
    return number if isinstance(number, int) else logging.INFO
