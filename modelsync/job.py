"""The job, start to end: config -> plan -> registry (claim) -> transfer -> sign -> registry (LIVE or ABANDONED)."""

from __future__ import annotations

import logging
from typing import Any

from .config import Config
from .errors import ModelSyncError
from .validate import signing_decision

log = logging.getLogger("modelsync.job")


def dry_run(cfg: Config) -> dict[str, Any]:
    sign, warning = signing_decision(cfg)
    return {"settings": cfg.report(), "signing": {"enabled": sign, "warning": warning}}


def run(cfg: Config) -> None:
    raise ModelSyncError("transfers are not wired in yet")
