"""What one setting is (name, default, type, help) and the helpers every part that declares or checks settings
uses. Imports nothing of modelsync: the storage types declare their settings with it, and settings.py gathers them.

Env var = MODEL_SYNC_<NAME>, arg = --<name with dashes>, as the spec names them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Setting:
    name: str
    help: str
    default: str | None = None
    # str | bool | int | path | size (bytes, see parse_size) | endpoint (a URL; https:// when written without scheme)
    kind: str = "str"
    secret: bool = False
    choices: tuple[str, ...] = ()
    group: str = "general"
    url: bool = False            # holds a URL: user-info and query values are masked wherever shown

    @property
    def env(self) -> str:
        return "MODEL_SYNC_" + self.name.upper()

    @property
    def arg(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def label(self) -> str:
        return f"{self.arg} / {self.env}"


class Given(Protocol):
    """The resolved settings as a storage type reads them (config.Config is one): typed values by setting name,
    where each came from, and what the type's own credentials files held beyond settings (e.g. the URI
    credentials dir's TOKEN), by the name of the setting that named the file."""

    @property
    def values(self) -> Mapping[str, Any]: ...

    @property
    def origins(self) -> Mapping[str, str]: ...

    @property
    def found(self) -> Mapping[str, Mapping[str, str]]: ...


def explicit(given: Given, setting: Setting) -> bool:
    """Given by the user (arg, env or .env), not filled from a file or a default."""
    return given.origins.get(setting.name) in ("arg", "env", "dotenv")


def missing(s: Setting, why: str, file_key: str | None = None, cred: Setting | None = None) -> str:
    """One line: the setting is required when <why>, and where it can be given."""
    line = f"{s.env} is required when {why}: set {s.arg} or {s.env}"
    if file_key and cred:
        what = "file" if cred.name.endswith("oci_credentials_path") else "directory"
        line += f", or put {file_key} in the {what} named by {cred.arg}"
    return line


def require(given: Given, needed: Iterable[Setting], why: str, file_key: str | None = None,
            cred: Setting | None = None) -> list[str]:
    return [missing(s, why, file_key, cred) for s in needed if given.values.get(s.name) in (None, "")]


def problem(s: Setting, text: str) -> str:
    return f"{s.label}: {text}"


def by_name(settings: Sequence[Setting]) -> dict[str, Setting]:
    return {s.name: s for s in settings}


_SIZE_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
               "ki": 1 << 10, "mi": 1 << 20, "gi": 1 << 30, "ti": 1 << 40}


def parse_size(text: str) -> int:
    """Bytes from `1048576`, `512Mi`, `2Gi`, `4G`, `1.5Gi` (binary with i, decimal without, as Kubernetes
    quantities; a trailing B is allowed); ValueError for anything else or a size below 1."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]i?)?[bB]?\s*", text)
    if not m:
        raise ValueError(f"'{text}' is not a size; use bytes or a suffix: 512Mi, 2Gi, 4G")
    value = int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "").lower()])
    if value < 1:
        raise ValueError(f"'{text}' is less than one byte")
    return value
