"""The pod's termination message: what `kubectl describe pod`, UIs and controllers read when the container ends.

Success, the shape upstream's job writes (so UIs and controllers built for it keep working), plus where the model
went:
    {"intent": "create_model", "RegisteredModel": {"id": "1"}, "ModelVersion": {"id": "2"},
     "ModelArtifact": {"id": "3"}, "uri": "oci://…@sha256:…", "digest": "sha256:…"}
    (an id is left out when the job has none, as upstream does)
Failure: one line, `modelsync failed (exit N): <the reason>`, secrets masked.

Written to $TERMINATION_MESSAGE_PATH when set, else to /dev/termination-log when the kubelet mounted one (never
created on an operator's machine), and never longer than the 4096 bytes the kubelet keeps.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .secret import mask

DEFAULT = Path("/dev/termination-log")
LIMIT = 4096


def _target() -> Path | None:
    given = os.environ.get("TERMINATION_MESSAGE_PATH")
    if given:
        return Path(given)
    return DEFAULT if DEFAULT.exists() else None


def _write(text: str) -> None:
    path = _target()
    if path is None:
        return
    data = text.encode()
    if len(data) > LIMIT:
        data = data[:LIMIT - 3].decode(errors="ignore").encode() + "…".encode()
    try:
        path.write_bytes(data)
    except OSError:
        pass  # the message is a courtesy: the job's outcome is its exit code and the registry's state


def success(intent: str, model_id: str | None, version_id: str | None, artifact_id: str | None, uri: str,
            digest: str | None) -> dict[str, object]:
    message: dict[str, object] = {"intent": intent}
    for key, value in (("RegisteredModel", model_id), ("ModelVersion", version_id), ("ModelArtifact", artifact_id)):
        if value:
            message[key] = {"id": str(value)}
    message["uri"] = uri
    if digest:
        message["digest"] = digest
    text = json.dumps(message)
    if len(text.encode()) > LIMIT:  # an absurdly long URI: the ids matter more
        text = json.dumps({k: v for k, v in message.items() if k not in ("uri", "digest")})
    _write(text)
    return message


def failure(code: int, reason: str) -> str:
    line = " ".join(mask(reason).split()) or "failed"
    text = f"modelsync failed (exit {code}): {line}"
    _write(text)
    return text
