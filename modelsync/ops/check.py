"""modelsync-check: can this configuration reach everything it needs? Without moving or writing anything.

    modelsync-check [the job's args]          with the job's env (MODEL_SYNC_*, SIGSTORE_*, .env) as it would run
    modelsync-from-pod pod.yaml --objects objects.yaml --check      the same for a pod's spec

Checks each part on its own and prints one line per part: the Model Registry (reachable, its API generation, the
token, the ids and names the intent needs), the source (credentials, CA, the files there), the destination
(credentials, CA, the base image, nothing of anyone else's in the way) and signing when it is on (trust, Fulcio,
the token file). Exit 0 when every part passes, 1 when one fails, 2 when the configuration itself is invalid.
"""

from __future__ import annotations

import os
import sys

PARTS = (("registry", "Model Registry"), ("source", "source"), ("destination", "destination"),
         ("signing", "signing"))


def _facts(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    if isinstance(value, list):
        return "; ".join(str(v) for v in value)
    return str(value)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__.strip())
        return 0
    from .. import logs
    from ..errors import ConfigError
    logs.setup(os.environ.get("MODEL_SYNC_LOG_FORMAT", "text"), os.environ.get("MODEL_SYNC_LOG_LEVEL", "warning"))
    from .. import config, job
    try:
        cfg = config.load([a for a in argv if a != "--dry-run"])
    except ConfigError as exc:
        for line in exc.problems:
            print(f"FAIL  configuration: {line}")
        return 2
    report, ok = job.dry_run(cfg)
    pre, errors = report["preflight"], report["preflight"].get("errors", {})
    if "metadata" in errors:
        print(f"FAIL  metadata: {errors['metadata']}")
    for key, label in PARTS:
        if key == "signing" and not report["signing"]["enabled"]:
            print(f"skip  signing: {report['signing']['warning'] or 'off'}")
            continue
        if key in errors:
            print(f"FAIL  {label}: {errors[key]}")
            continue
        facts = dict(report["signing"]) if key == "signing" else pre.get(key, {})
        if key == "registry" and "plan" in pre:
            facts = {**facts, "plan": _facts(pre["plan"])}
        if key == "signing":
            facts.pop("enabled", None), facts.pop("warning", None)
        print(f"ok    {label}: {_facts(facts)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
