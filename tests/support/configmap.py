"""A metadata directory laid out as the kubelet mounts a ConfigMap (timestamped directory, ..data link, key links)."""

from __future__ import annotations

import os
from pathlib import Path


def write_configmap(root: Path, values: dict[str, str]) -> Path:
    """Lay files out as the kubelet mounts a ConfigMap: ..<timestamp>/KEY, ..data -> it, KEY -> ..data/KEY."""
    stamp = root / "..2026_11_25_10_00_00.000000001"
    stamp.mkdir(parents=True)
    for key, text in values.items():
        (stamp / key).write_text(text)
    os.symlink(stamp.name, root / "..data")
    for key in values:
        os.symlink(f"..data/{key}", root / key)
    return root
