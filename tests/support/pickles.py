"""Pickle-based model files for the scan's tests, made here without torch: a PyTorch-style zip checkpoint (as
torch.save writes it since 1.6: archive/data.pkl, protocol 2, whose tensors are torch._utils._rebuild_tensor_v2
calls on storages given by persistent id ('storage', torch.FloatStorage, key, 'cpu', numel), beside archive/data/<key>
holding each storage's bytes, archive/version and archive/byteorder), and a malicious pickle (its __reduce__ would
run a command when loaded). None of them is ever loaded by the tests.

The torch names are pickled by reference, so while a checkpoint is written, stand-in modules `torch` and
`torch._utils` are put into sys.modules (and removed after): pickle writes GLOBAL torch._utils _rebuild_tensor_v2
exactly as for the real function.
"""

from __future__ import annotations

import collections
import contextlib
import io
import os
import pickle
import sys
import types
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class Malicious:
    """Runs `command` in a shell when unpickled (os.system, pickled as posix.system)."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self) -> tuple[Any, ...]:
        return os.system, (self.command,)


@contextlib.contextmanager
def _torch_names() -> Iterator[types.SimpleNamespace]:
    saved = {name: sys.modules.get(name) for name in ("torch", "torch._utils")}
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args: Any) -> None:  # never called: the checkpoint is never loaded
        raise AssertionError("a stand-in")

    class FloatStorage:
        pass

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2  # type: ignore[attr-defined]
    torch.FloatStorage = FloatStorage  # type: ignore[attr-defined]
    torch._utils = utils  # type: ignore[attr-defined]
    sys.modules.update({"torch": torch, "torch._utils": utils})
    try:
        yield types.SimpleNamespace(rebuild=_rebuild_tensor_v2, FloatStorage=FloatStorage)
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


class _Storage:
    def __init__(self, key: str, numel: int):
        self.key, self.numel = key, numel


class _Tensor:
    def __init__(self, rebuild: Any, storage: _Storage, shape: tuple[int, ...]):
        self.rebuild, self.storage, self.shape = rebuild, storage, shape

    def __reduce__(self) -> tuple[Any, ...]:
        stride = tuple(int(_prod(self.shape[i + 1:])) for i in range(len(self.shape)))
        return self.rebuild, (self.storage, 0, self.shape, stride, False, collections.OrderedDict())


def _prod(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def torch_pickle(shapes: dict[str, tuple[int, ...]], extra: dict[str, Any] | None = None) -> bytes:
    """data.pkl of a state dict of float32 tensors of these shapes (storages '0', '1', ...), plus extra entries."""
    with _torch_names() as torch:
        state: collections.OrderedDict[str, Any] = collections.OrderedDict()
        for i, (name, shape) in enumerate(shapes.items()):
            state[name] = _Tensor(torch.rebuild, _Storage(str(i), _prod(shape)), shape)
        state.update(extra or {})
        out = io.BytesIO()

        class TorchPickler(pickle.Pickler):
            def persistent_id(self, obj: Any) -> Any:
                if isinstance(obj, _Storage):
                    return "storage", torch.FloatStorage, obj.key, "cpu", obj.numel
                return None

        TorchPickler(out, protocol=2).dump(state)
        return out.getvalue()


def torch_checkpoint(path: Path, shapes: dict[str, tuple[int, ...]], extra: dict[str, Any] | None = None,
                     fill: bytes | None = None) -> Path:
    """A PyTorch zip checkpoint at path (stored, as torch.save writes it); each storage's bytes are fill repeated
    (default zeros), written in 64 MiB pieces so a big one needs no big buffer."""
    path.parent.mkdir(parents=True, exist_ok=True)
    unit = fill or b"\0"
    biggest = max((_prod(shape) * 4 for shape in shapes.values()), default=0)
    piece = unit * (min(64 << 20, biggest) // len(unit) + 1)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", torch_pickle(shapes, extra))
        zf.writestr("archive/byteorder", "little")
        for i, shape in enumerate(shapes.values()):
            size = _prod(shape) * 4
            with zf.open(f"archive/data/{i}", "w", force_zip64=size > (1 << 31)) as member:
                left = size
                while left:
                    n = min(left, len(piece))
                    member.write(piece[:n])
                    left -= n
        zf.writestr("archive/version", "3\n")
    return path
