"""A directory mounted in the pod (a PVC, or any path: types "pvc" and "local" are the same store)."""

from __future__ import annotations

from pathlib import Path

from ..locations import LocalLocation
from ..setting import Given, Setting, require

_BY_SIDE = {
    "source": Setting("source_path", 'Directory already mounted in the pod, when --source-type is "pvc"/"local"',
                      kind="path", group="source"),
    "destination": Setting("destination_path", 'Directory to copy into, when --destination-type is "pvc"/"local"',
                           kind="path", group="destination"),
}


def setting(side: str) -> Setting:
    return _BY_SIDE[side]


def settings(side: str) -> tuple[Setting, ...]:
    return (_BY_SIDE[side],)


def location(given: Given, side: str) -> LocalLocation:
    return LocalLocation(path=Path(given.values[_BY_SIDE[side].name]))


def validate(given: Given, side: str) -> list[str]:
    kind = given.values.get(f"{side}_type")
    return require(given, [_BY_SIDE[side]], f'{side} type is "{kind}"')
