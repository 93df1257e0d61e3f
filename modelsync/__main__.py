"""Entry point: parse, run, and map exceptions to exit codes (0 done, 1 runtime failure, 2 bad configuration)."""

from __future__ import annotations

import errno
import json
import logging
import os
import sys
from collections.abc import Sequence

from . import logs, termination
from .clients import events
from .errors import ConfigError, ModelSyncError
from .secret import mask

log = logging.getLogger("modelsync")

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    # Log settings are needed before the config is resolved (to report its problems), so read them from env first.
    logs.setup(os.environ.get("MODEL_SYNC_LOG_FORMAT", "text"), os.environ.get("MODEL_SYNC_LOG_LEVEL", "info"))
    events.start(events.from_pod())  # the pod's Kubernetes Events; nothing outside a pod
    try:
        return _run(argv)
    finally:
        events.stop()


def _failed(code: int, reason: str) -> int:
    events.emit("TransferFailed", f"exit {code}: {reason}", warning=True)
    termination.failure(code, reason)
    return code


def _run(argv: Sequence[str] | None) -> int:
    try:
        from . import config
        cfg = config.load(argv)
        logs.setup(cfg.log_format, cfg.log_level)
        from . import job
        if cfg.dry_run:
            report, ok = job.dry_run(cfg)
            print(json.dumps(report, indent=2))
            if not ok:
                log.error("preflight failed: %s", report["preflight"]["error"])
            return EXIT_OK if ok else EXIT_FAILED
        job.run(cfg)
        return EXIT_OK
    except ConfigError as exc:
        for line in exc.problems:
            log.error("config: %s", line)
        log.error("configuration invalid (%d problem%s); nothing was done", len(exc.problems),
                  "" if len(exc.problems) == 1 else "s")
        return _failed(EXIT_CONFIG, "; ".join(exc.problems))
    except ModelSyncError as exc:
        log.error("%s", exc)
        return _failed(EXIT_FAILED, str(exc))
    except BrokenPipeError:  # e.g. `modelsync --dry-run | head`
        return EXIT_OK
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # the machine, not a bug: one line, no trace
            where = f" ({mask(str(exc.filename))})" if exc.filename else ""
            log.error("no space left on device%s: the storage path (--storage-path / MODEL_SYNC_STORAGE_PATH) or "
                      "the destination volume filled up during the sync; free space or use a larger volume", where)
        else:
            log.error("unexpected %s: %s", type(exc).__name__, mask(str(exc)), exc_info=True)
        return EXIT_FAILED
    except KeyboardInterrupt:
        log.error("interrupted")
        return _failed(EXIT_FAILED, "interrupted")
    except Exception as exc:  # a bug: keep the trace for the developer, masked like everything else
        log.error("unexpected %s: %s", type(exc).__name__, mask(str(exc)), exc_info=True)
        return _failed(EXIT_FAILED, f"unexpected {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    sys.exit(main())
