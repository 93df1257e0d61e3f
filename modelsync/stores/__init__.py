"""What a kind of store needs on either side of a transfer, written once for both: its settings (named
`<side>_...`), the keys its credentials files may hold, its typed location (built once from the resolved settings)
and its checks. The source and destination types (sources/, destinations/) take these; a type that exists on one
side only (uri, hf) keeps all of it in its own module.

Every store module has

    settings(side) -> tuple[Setting, ...]        its settings for that side, in --help order
    read_files(raw, side) -> Filled              settings its credentials files fill (ranked below args/env)
    location(given, side) -> <Location>          the typed, frozen location the transfer code takes
    validate(given, side) -> list[str]           the spec's required-when rules, one line each
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..setting import Given, Setting


@dataclass(frozen=True)
class Filled:
    """What a type's credentials files gave: `values` fill settings still unset (origin "file"), `derived` ones
    computed from others (origin "derived"), `found` the file's other keys the type reads itself, by the name of
    the setting that named the file. A reader raises ConfigError for a file it cannot read, or lists it in
    `problems` when its derived values still hold."""
    values: Mapping[str, str] = field(default_factory=dict)
    derived: Mapping[str, str] = field(default_factory=dict)
    found: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    problems: tuple[str, ...] = ()  # a file that could not be read, when what else was found still counts


NOTHING = Filled()


REPLACE_EXISTING = Setting(
    "destination_replace_existing", "Let the job overwrite what it did not write: files at the model's paths in a "
    "pvc/local destination; objects under an s3 destination prefix, which then ends holding exactly the synced "
    "files. Default false: such a destination is refused before anything moves", default="false", kind="bool",
    group="destination")


class StorageType(Protocol):
    """What every storage type's module has, source or destination (sources.SourceType and
    destinations.DestinationType add each side's operations; mypy checks each module in TYPES against them)."""
    @property
    def WRITTEN_AS(self) -> tuple[str, ...]: ...  # noqa: N802 -- a module constant
    @property
    def SETTINGS(self) -> tuple[Setting, ...]: ...  # noqa: N802
    @property
    def __name__(self) -> str: ...

    def read_files(self, raw: Mapping[str, str]) -> Filled: ...
    def validate(self, given: Given) -> list[str]: ...
    def spec(self, given: Given) -> Any: ...
    def describe(self, spec: Any) -> str: ...
