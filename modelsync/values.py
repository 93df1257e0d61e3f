"""The resolved configuration: every setting's typed value and where it came from, and, once validated, each
storage type's settings as its typed, frozen spec (Config.source, Config.destination) that the job hands on."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .secret import MASK, Secret, redact_url
from .settings import SETTINGS


@dataclass(frozen=True)
class Config:
    values: Mapping[str, Any]
    origins: Mapping[str, str]
    dry_run: bool = False
    sigstore_env: Mapping[str, str] = field(default_factory=dict)
    found: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # credentials files' other keys
    registry_ca_pem: str | None = None  # PEM text from the env var named by --registry-custom-ca-envvar
    source: Any = None       # the source type's spec (sources/__init__.py), set once validation passed
    destination: Any = None  # the destination type's spec (destinations/__init__.py)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    def report(self) -> dict[str, dict[str, Any]]:
        """Every setting with its value (secrets as ***) and origin, for --dry-run."""
        out = {}
        for s in SETTINGS:
            value = self.values.get(s.name)
            if isinstance(value, Secret):
                value = MASK if value else ""
            elif s.url and value:
                value = redact_url(value)
            elif isinstance(value, Path):
                value = str(value)
            out[s.name] = {"value": value, "origin": self.origins.get(s.name, "unset"), "env": s.env, "arg": s.arg}
        return out

    def to_json(self) -> str:
        return json.dumps(self.report(), indent=2)
