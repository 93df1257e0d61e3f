"""The pickle check before LIVE: every pickle-based file of a model is read opcode by opcode, never loaded, and each
global it imports is checked against an allow-list. A pickle runs code when it is loaded (its REDUCE/NEWOBJ/BUILD
call whatever its GLOBAL/STACK_GLOBAL/INST imported), so what a pickle imports is what it can do.

Contract: Scanner(mode, allow)(rel, path) checks one file on disk; with mode "refuse" a finding raises
UnsafePickle (exit 1: the job marks the artifact ABANDONED), with "warn" it is logged and the job goes on, "off"
checks nothing. Scanner.facts(files) are the verdicts for the artifact's properties (modelsync.scan.*).
scan_file(path, rel, allowed) is the check itself: None if the file is not pickle-based, else its findings.

What is a pickle (by content, not only by name; .safetensors, .gguf, .json, ... never are: their loaders do not
unpickle):
- a file starting with PROTO (0x80, version 2..5), read strictly: a pickle that cannot be followed to its STOP is a
  finding (its loader could run what comes before the break);
- a zip (PK\\x03\\x04; PyTorch's checkpoints since 1.6: archive/data.pkl beside archive/data/<n>): each *.pkl
  member, read streaming from the zip (the tensors' bytes are never read);
- a file named *.pkl .pickle .joblib .bin .pt .pth .ckpt: also protocols 0/1 (no PROTO), and joblib's compressed
  forms (zlib, gzip, bz2, xz, lzma by their magic; lz4, unreadable here, is a finding); read leniently: bytes
  that are not a pickle (a raw .bin of weights) are no finding, unless an import was read, or an import or unknown
  called, before they broke off (an extension code read first is no finding then: 1 random file in 85 starts so);
- pickles one after another (PyTorch's legacy format writes five before the raw storages), each checked.

How: pickletools.genops walks the opcodes while a small stack machine follows the values, so STACK_GLOBAL's module
and name are known wherever the two strings came from (pushed, or memoized by PUT/MEMOIZE and fetched by GET); a
STACK_GLOBAL whose module or name is not a string pushed by the pickle is a finding, as are the copyreg extension
codes (EXT1/2/4), which import whatever the loading process registered. joblib (NumpyPickler) writes each numpy
array's raw bytes straight after the BUILD of its joblib.numpy_pickle.NumpyArrayWrapper (one padding-length byte
and padding first, when the wrapper's state has numpy_array_alignment_bytes); the machine reads the wrapper's
shape and dtype as joblib does, skips those bytes (seek, not read), and checks the nested pickle joblib writes
instead for arrays of Python objects.

The allow-list (ALLOWED): the globals PyTorch's own weights_only unpickler allows (tensor, parameter and storage
rebuilds, storage and dtype names, torch.Size, torch.device, collections.OrderedDict, _codecs.encode for bytes,
builtins.set/frozenset/bytearray/complex), numpy's array and scalar reconstruction (numpy 1 and 2 module names),
and joblib's NumpyArrayWrapper (a data holder). --scan-allow adds prefixes of "module.name" (sklearn. allows every
global of scikit-learn); a prefix that ends in the module part never allows a dotted name (an attribute path such
as sklearn.base + os.system reaches other modules). NEVER wins over both: os, posix, nt, sys, subprocess, runpy,
importlib, builtins.eval/exec/getattr/__import__, ... and every dunder attribute.

Cost: genops is pure Python, about 1 µs per opcode; a PyTorch zip's data.pkl holds a few opcodes per tensor, so a
checkpoint costs its pickle, not its bytes (`make bench` measures it per GiB).
"""

from __future__ import annotations

import _compat_pickle
import bz2
import gzip
import io
import logging
import lzma
import pickletools
import re
import threading
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from . import __version__
from .errors import ModelSyncError

log = logging.getLogger("modelsync.scan")

SCANNER = f"modelsync.scan {__version__}"
MODES = ("refuse", "warn", "off")
PROPERTY_PREFIX = "modelsync.scan."

PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".bin", ".pt", ".pth", ".ckpt")
# Formats whose loaders never unpickle: not read, even if their first bytes happen to look like PROTO.
SAFE_SUFFIXES = (".safetensors", ".gguf", ".json", ".txt", ".md", ".model", ".tiktoken", ".onnx", ".msgpack",
                 ".h5", ".npy", ".npz", ".yaml", ".yml", ".py", ".sig")

_STORAGES = ("Double", "Float", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool", "ComplexDouble",
             "ComplexFloat", "QUInt8", "QInt8", "QInt32", "QUInt4x2", "QUInt2x4")
_TENSORS = ("Double", "Float", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool")
_DTYPES = ("float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool",
           "complex32", "complex64", "complex128", "qint8", "quint8", "qint32", "quint4x2", "quint2x4",
           "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu", "float4_e2m1fn_x2",
           "bits8", "bits16", "bits1x8", "bits2x4", "bits4x2", *(f"uint{n}" for n in range(1, 8)),
           "uint16", "uint32", "uint64", *(f"int{n}" for n in range(1, 8)))
_REBUILDS = ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
             "_rebuild_parameter_with_state", "_rebuild_qtensor", "_rebuild_sparse_tensor",
             "_rebuild_meta_tensor_no_storage", "_rebuild_wrapper_subclass", "_rebuild_device_tensor_from_numpy",
             "_rebuild_device_tensor_from_cpu_tensor")

ALLOWED: frozenset[str] = frozenset({
    # PyTorch (torch/_weights_only_unpickler.py's defaults)
    *(f"torch._utils.{f}" for f in _REBUILDS), "torch._tensor._rebuild_from_type_v2",
    "torch.nn.parameter.Parameter", "torch.Size", "torch.Tensor", "torch.device", "torch.serialization._get_layout",
    *(f"torch.{s}Storage" for s in _STORAGES), "torch.storage.TypedStorage", "torch.storage.UntypedStorage",
    "torch.UntypedStorage", "torch.TypedStorage", *(f"torch.{t}Tensor" for t in _TENSORS),
    *(f"torch.{d}" for d in _DTYPES),
    *(f"torch.{q}" for q in ("per_tensor_affine", "per_tensor_symmetric", "per_channel_affine",
                             "per_channel_symmetric", "per_channel_affine_float_qparams")),
    # Python values pickled by reference
    "collections.OrderedDict", "collections.Counter", "_codecs.encode",
    "builtins.set", "builtins.frozenset", "builtins.bytearray", "builtins.complex",
    # numpy arrays, dtypes and scalars (numpy 1: numpy.core, numpy 2: numpy._core)
    "numpy.ndarray", "numpy.dtype",
    *(f"numpy.{core}.{f}" for core in ("core", "_core")
      for f in ("multiarray._reconstruct", "multiarray.scalar", "numeric._frombuffer")),
    # joblib: the placeholder its arrays' raw bytes follow
    "joblib.numpy_pickle.NumpyArrayWrapper",
})

# Never allowed, whatever --scan-allow says: modules that reach the system or load code, and builtins that do.
NEVER_MODULES = frozenset({
    "os", "posix", "nt", "posixpath", "ntpath", "sys", "subprocess", "runpy", "importlib", "pty", "socket", "shutil",
    "ctypes", "pickle", "_pickle", "marshal", "code", "codeop", "webbrowser", "multiprocessing", "asyncio",
    "signal", "pdb", "bdb", "timeit", "platform", "sysconfig", "site", "ensurepip", "venv", "zipimport",
    "pkgutil", "inspect", "types", "gc", "_thread", "threading", "__main__",
})
NEVER_BUILTINS = frozenset({
    "eval", "exec", "compile", "getattr", "setattr", "delattr", "__import__", "open", "globals", "locals", "vars",
    "breakpoint", "input", "exit", "quit", "help", "memoryview", "super", "type", "object", "dir",
})
_DUNDER_OK = frozenset({"__newobj__", "__newobj_ex__"})  # copyreg's, written by protocol 0/1 pickles
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_PREFIX = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\.?")


class UnsafePickle(ModelSyncError):
    """A pickle-based file imports something off the allow-list (--scan refuse)."""


def never(module: str, name: str) -> bool:
    """Imports no allow-list and no --scan-allow may permit."""
    if module.split(".")[0] in NEVER_MODULES:
        return True
    if module == "builtins" and name.split(".")[0] in NEVER_BUILTINS:
        return True
    return any(p.startswith("__") and p.endswith("__") and p not in _DUNDER_OK for p in name.split("."))


def parse_allow(text: str | None) -> tuple[str, ...]:
    """--scan-allow's prefixes; ValueError naming a malformed one."""
    prefixes = tuple(p.strip() for p in (text or "").split(",") if p.strip())
    for p in prefixes:
        if not _PREFIX.fullmatch(p):
            raise ValueError(f"'{p}' is not a module prefix (e.g. sklearn. or mypkg.models.Net)")
    return prefixes


@dataclass(frozen=True)
class Allowed:
    """The default allow-list plus --scan-allow's prefixes."""
    prefixes: tuple[str, ...] = ()

    def __call__(self, module: str, name: str) -> bool:
        if never(module, name):
            return False
        full = f"{module}.{name}"
        if full in ALLOWED:
            return True
        return any(full.startswith(p) and ("." not in name or len(p) > len(module) + 1) for p in self.prefixes)


@dataclass(frozen=True)
class Finding:
    file: str      # the model's relative path; a zip member as file!member
    what: str      # the global, module.name, or what could not be followed
    kind: str = "global"   # global | never | unresolved | malformed

    def line(self) -> str:
        if self.kind == "global":
            top = self.what.split(".")[0]
            return (f"{self.file}: the pickle imports {self.what}, which is not on the allow-list; if it is "
                    f"trusted, allow it with --scan-allow {top}. (or a longer prefix)")
        if self.kind == "never":
            return f"{self.file}: the pickle imports {self.what}, which is never allowed (it can run anything)"
        return f"{self.file}: {self.what}"


# ---- the opcode walk ---------------------------------------------------------------------------------------------


class _Malformed(Exception):
    """The bytes stop being a pickle that can be followed."""


@dataclass(frozen=True)
class _Global:
    module: str
    name: str


class _Obj:
    """What a call (REDUCE, NEWOBJ, INST, OBJ) made: its callable, arguments and BUILD state."""
    __slots__ = ("cls", "args", "state")

    def __init__(self, cls: Any, args: Any):
        self.cls, self.args, self.state = cls, args, None


_UNKNOWN = object()
_SMALL = 4096            # literal values kept for the stack machine; bigger ones (tensor bytes) are not kept
_JOBLIB_WRAPPER = _Global("joblib.numpy_pickle", "NumpyArrayWrapper")


class _Reader:
    """A stream read by genops: reads capped at what is left (a forged length cannot make one read allocate more
    than the file holds), two bytes looked at ahead (is another pickle next?), and skips forward (joblib's array
    bytes: seek where the stream can, else read and dropped)."""

    def __init__(self, raw: IO[bytes], size: int | None):
        self.raw, self.left = raw, size if size is not None else 1 << 62
        self.start, self.back = self.left, b""

    def read(self, n: int = -1) -> bytes:  # genops' hot path: one call per opcode at least
        if n < 0 or n > self.left:
            n = self.left
        if self.back:
            head, self.back = self.back[:n], self.back[n:]
            data = head + self.raw.read(n - len(head)) if n > len(head) else head
        else:
            data = self.raw.read(n)
        self.left -= len(data)
        return data

    def readline(self) -> bytes:
        if b"\n" in self.back:
            line, _, self.back = self.back.partition(b"\n")
            line += b"\n"
        else:
            line, self.back = self.back + self.raw.readline(self.left - len(self.back)), b""
        self.left -= len(line)
        return line

    def tell(self) -> int:
        return self.start - self.left

    def peek2(self) -> bytes:
        data = self.read(2)
        self.back = data + self.back
        self.left += len(data)
        return data

    def skip(self, n: int) -> None:
        if n > self.left:
            raise _Malformed(f"joblib array data runs past the end ({n} bytes, {self.left} left)")
        head, self.back = self.back[:n], self.back[n:]
        left = n - len(head)
        if left and self.raw.seekable():
            self.raw.seek(left, io.SEEK_CUR)
        else:
            while left:
                got = len(self.raw.read(min(left, 1 << 20)))
                if not got:
                    raise _Malformed("joblib array data runs past the end")
                left -= got
        self.left -= n


class _Walk:
    """One pickle followed from its first opcode to STOP: its stack and memo, the imports found."""

    def __init__(self, reader: _Reader, rel: str, allowed: Allowed, findings: list[Finding]):
        self.reader, self.rel, self.allowed, self.findings = reader, rel, allowed, findings
        self.stack: list[Any] = []
        self.metastack: list[list[Any]] = []
        self.memo: dict[int, Any] = {}
        self.proto = 0
        self.imports = 0   # module and name pairs read (a raw .bin seldom yields even one)
        self.calls = 0     # REDUCE, NEWOBJ, NEWOBJ_EX, OBJ on an import or an unknown: where a loader runs code

    def run(self) -> None:
        try:
            for op, arg, pos in pickletools.genops(cast(IO[bytes], self.reader)):
                self.step(op.name, arg, pos or 0)
        except _Malformed:
            raise
        except (ValueError, IndexError, KeyError, TypeError, UnicodeDecodeError, MemoryError, OverflowError,
                EOFError, zlib.error, lzma.LZMAError, OSError) as exc:
            raise _Malformed(f"{type(exc).__name__}: {exc}") from None

    def _pop_mark(self) -> list[Any]:
        items = self.stack
        if not self.metastack:
            raise _Malformed("no MARK on the stack")
        self.stack = self.metastack.pop()
        return items

    def _pop(self) -> Any:
        if not self.stack:
            raise _Malformed("stack underflow")
        return self.stack.pop()

    def _import(self, module: str, name: str, pos: int) -> _Global:
        if self.proto < 3:  # as pickle's find_class with fix_imports: Python 2 names are Python 3's
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        if not (_DOTTED.fullmatch(module) and _DOTTED.fullmatch(name)):
            raise _Malformed(f"an import at byte {pos} is not a module and name: {module!r} {name!r}")
        self.imports += 1
        if not self.allowed(module, name):
            self.findings.append(Finding(self.rel, f"{module}.{name}", "never" if never(module, name) else "global"))
        return _Global(module, name)

    def step(self, name: str, arg: Any, pos: int) -> None:  # noqa: C901 -- one branch per opcode family
        st = self.stack
        if name in _LITERALS:
            st.append(arg if not isinstance(arg, bytes | str) or len(arg) <= _SMALL else _UNKNOWN)
        elif name in _CONSTANTS:
            st.append(_CONSTANTS[name])
        elif name == "PROTO":
            self.proto = arg
        elif name in ("FRAME", "STOP", "READONLY_BUFFER"):
            pass
        elif name == "MARK":
            self.metastack.append(st)
            self.stack = []
        elif name in ("GLOBAL", "INST"):
            module, _, attr = str(arg).partition(" ")
            found = self._import(module, attr, pos)
            if name == "INST":
                marked = tuple(self._pop_mark())  # first: it changes self.stack
                self.stack.append(_Obj(found, marked))
            else:
                st.append(found)
        elif name == "STACK_GLOBAL":
            attr, module = self._pop(), self._pop()
            if isinstance(module, str) and isinstance(attr, str):
                st.append(self._import(module, attr, pos))
            else:
                self.findings.append(Finding(self.rel, f"STACK_GLOBAL at byte {pos} imports a module or name that "
                                                       f"is not a string the pickle pushed: it cannot be checked",
                                             "unresolved"))
                st.append(_UNKNOWN)
        elif name in ("EXT1", "EXT2", "EXT4"):
            self.findings.append(Finding(self.rel, f"{name} at byte {pos} imports copyreg extension code {arg}, "
                                                   "which depends on the loading process: it cannot be checked",
                                         "unresolved"))
            st.append(_UNKNOWN)
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            if not st:
                raise _Malformed("PUT on an empty stack")
            self.memo[arg] = st[-1]
        elif name == "MEMOIZE":
            if not st:
                raise _Malformed("MEMOIZE on an empty stack")
            self.memo[len(self.memo)] = st[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            if arg not in self.memo:
                raise _Malformed(f"GET of memo {arg}, never PUT")
            st.append(self.memo[arg])
        else:
            self._structure(name, arg)

    def _called(self, cls: Any) -> None:
        if isinstance(cls, _Global) or cls is _UNKNOWN:  # calling None or a number fails in any loader
            self.calls += 1

    def _structure(self, name: str, arg: Any) -> None:  # noqa: C901 -- one branch per opcode family
        st = self.stack
        if name == "EMPTY_TUPLE":
            st.append(())
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            n = int(name[-1])
            if len(st) < n:
                raise _Malformed("stack underflow")
            top = tuple(st[-n:])
            del st[-n:]
            st.append(top)
        elif name == "TUPLE":
            marked = tuple(self._pop_mark())  # first: it changes self.stack
            self.stack.append(marked)
        elif name in ("EMPTY_LIST", "EMPTY_SET"):
            st.append([])
        elif name == "LIST":
            as_list = self._pop_mark()
            self.stack.append(as_list)
        elif name == "FROZENSET":
            self._pop_mark()
            self.stack.append(_UNKNOWN)
        elif name == "APPEND":
            value = self._pop()
            if self.stack and isinstance(self.stack[-1], list):
                self.stack[-1].append(value)
        elif name in ("APPENDS", "ADDITEMS"):
            items = self._pop_mark()
            if self.stack and isinstance(self.stack[-1], list):
                self.stack[-1].extend(items)
        elif name == "EMPTY_DICT":
            st.append({})
        elif name == "DICT":
            items = self._pop_mark()
            self.stack.append(_pairs({}, items))
        elif name == "SETITEM":
            value, key = self._pop(), self._pop()
            if self.stack and isinstance(self.stack[-1], dict):
                _pairs(self.stack[-1], [key, value])
        elif name == "SETITEMS":
            items = self._pop_mark()
            if self.stack and isinstance(self.stack[-1], dict):
                _pairs(self.stack[-1], items)
        elif name == "POP":
            self._pop()
        elif name == "POP_MARK":
            self._pop_mark()
        elif name == "DUP":
            if not st:
                raise _Malformed("DUP on an empty stack")
            st.append(st[-1])
        elif name == "PERSID":
            st.append(_UNKNOWN)
        elif name == "BINPERSID":
            self._pop()
            st.append(_UNKNOWN)
        elif name in ("REDUCE", "NEWOBJ"):
            args, cls = self._pop(), self._pop()
            self.stack.append(_Obj(cls, args))
            self._called(cls)
        elif name == "NEWOBJ_EX":
            _kwargs, args, cls = self._pop(), self._pop(), self._pop()
            self.stack.append(_Obj(cls, args))
            self._called(cls)
        elif name == "OBJ":
            items = self._pop_mark()
            if not items:
                raise _Malformed("OBJ without a class")
            self.stack.append(_Obj(items[0], tuple(items[1:])))
            self._called(items[0])
        elif name == "BUILD":
            state = self._pop()
            if not self.stack:
                raise _Malformed("BUILD on an empty stack")
            obj = self.stack[-1]
            if isinstance(obj, _Obj):
                obj.state = state
                if obj.cls == _JOBLIB_WRAPPER:
                    self._joblib_array(state)
        else:
            raise _Malformed(f"opcode {name} is not followed")

    def _joblib_array(self, state: Any) -> None:
        """joblib.load reads the wrapped array's bytes right here (NumpyArrayWrapper.read_array): skip them, or
        check the nested pickle it writes for arrays of Python objects."""
        if not isinstance(state, dict):
            raise _Malformed("a joblib NumpyArrayWrapper without its state")
        shape, dtype = state.get("shape"), state.get("dtype")
        if not (isinstance(shape, tuple) and all(isinstance(n, int) and n >= 0 for n in shape)):
            raise _Malformed(f"a joblib array whose shape cannot be followed: {shape!r}")
        itemsize, objects = _dtype_size(dtype)
        if objects:
            _Walk(self.reader, self.rel, self.allowed, self.findings).run()
            return
        if state.get("numpy_array_alignment_bytes") is not None:
            pad = self.reader.read(1)
            if len(pad) != 1:
                raise _Malformed("a joblib array's padding byte is missing")
            self.reader.skip(pad[0])
        count = 1
        for n in shape:
            count *= n
        self.reader.skip(count * itemsize)


def _pairs(target: dict[Any, Any], items: list[Any]) -> dict[Any, Any]:
    if len(items) % 2:
        raise _Malformed("a dict from an odd number of items")
    for key, value in zip(items[::2], items[1::2], strict=True):
        try:
            target[key] = value
        except TypeError:
            pass  # an unhashable key (only the values joblib needs are followed)
    return target


def _dtype_size(dtype: Any) -> tuple[int, bool]:
    """(itemsize, holds Python objects) of a pickled numpy.dtype: dtype(str, align, copy) + BUILD (version,
    byteorder, subdescr, names, fields, elsize, alignment, flags[, metadata]), as numpy's dtype.__reduce__."""
    if not (isinstance(dtype, _Obj) and dtype.cls == _Global("numpy", "dtype") and isinstance(dtype.args, tuple)
            and dtype.args and isinstance(dtype.args[0], str)):
        raise _Malformed(f"a joblib array whose dtype cannot be followed: {dtype!r}")
    spec, state = dtype.args[0], dtype.state
    flags = state[7] if isinstance(state, tuple) and len(state) > 7 and isinstance(state[7], int) else 0
    if spec.startswith("O") or flags & 1:  # NPY_ITEM_HASOBJECT
        return 0, True
    if isinstance(state, tuple) and len(state) > 5 and isinstance(state[5], int) and state[5] > 0:
        return state[5], False  # flexible and structured types carry their element size
    m = re.fullmatch(r"[a-zA-Z?](\d+)", spec)
    if not m or int(m.group(1)) <= 0:
        raise _Malformed(f"a joblib array whose dtype cannot be followed: {spec!r}")
    return int(m.group(1)), False


_LITERALS = frozenset({"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT",
                       "STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE",
                       "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8"})
_CONSTANTS: dict[str, Any] = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False, "NEXT_BUFFER": _UNKNOWN}


# ---- files -------------------------------------------------------------------------------------------------------


_PROTO_MAGIC = tuple(bytes([0x80, v]) for v in range(2, 6))
_ZIP_MAGIC = b"PK\x03\x04"
_WHOLE = 256 << 20
_LZ4_MAGIC = b"\x04\x22\x4d\x18"


def _is_proto(head: bytes) -> bool:
    return head[:2] in _PROTO_MAGIC


def _pickles(reader: _Reader, rel: str, allowed: Allowed, strict: bool) -> tuple[bool, list[Finding]]:
    """Every pickle of one stream, one after another while the next starts with PROTO: (was it a pickle,
    findings). strict: the stream is known to be a pickle, and one that cannot be followed is a finding."""
    findings: list[Finding] = []
    first = True
    while True:
        walk = _Walk(reader, rel, allowed, [])
        try:
            walk.run()
        except _Malformed as exc:
            if first and not strict and not walk.imports and not walk.calls:
                # A raw .bin (no PROTO) read as opcodes until it broke, having imported and called nothing: no pickle.
                # Random bytes start with EXT1/2/4 one time in 85; a loader stops there (no such code is registered).
                return False, []
            findings += walk.findings
            if first:
                findings.append(Finding(rel, f"not a pickle that can be followed to its end ({exc}): refused, as its "
                                             "loader could run what comes before the break", "malformed"))
            return True, findings
        findings += walk.findings
        first = False
        if not _is_proto(reader.peek2()):
            return True, findings


def _decompressed(raw: IO[bytes], head: bytes) -> IO[bytes] | None:
    """joblib's compressed forms, streaming (joblib.compressor's magics; lz4 needs a package: not read)."""
    if head.startswith(b"\x1f\x8b"):
        return cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb"))
    if head.startswith(b"BZh"):
        return bz2.BZ2File(raw, "rb")
    if head.startswith(b"\xfd7zXZ"):
        return lzma.LZMAFile(raw, "rb", format=lzma.FORMAT_XZ)
    if head.startswith(b"]\x00\x00"):
        return lzma.LZMAFile(raw, "rb", format=lzma.FORMAT_ALONE)
    if head[:1] == b"x" and (head[0] * 256 + head[1]) % 31 == 0:  # a zlib header (joblib's BinaryZlibFile)
        return io.BufferedReader(_ZlibReader(raw))
    return None


class _ZlibReader(io.RawIOBase):
    """A raw zlib stream as a readable file (what joblib's compress=True writes)."""

    def __init__(self, raw: IO[bytes]):
        super().__init__()
        self.src, self.z, self.buf = raw, zlib.decompressobj(), b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self.buf and not self.z.eof:
            chunk = self.src.read(1 << 16)
            self.buf = self.z.decompress(chunk, 1 << 20) if chunk else self.z.flush()
            if not chunk and not self.buf:
                break
            if self.z.unconsumed_tail:
                self.buf += self.z.decompress(self.z.unconsumed_tail, 1 << 20)
        n = min(len(b), len(self.buf))
        b[:n] = self.buf[:n]
        self.buf = self.buf[n:]
        return n


def needs_reading(rel: str) -> bool:
    """Whether the check must read this file's bytes (it may hold a pickle); a layer holding one is never reused
    from an earlier image unread (resync.py), since that image may have been made with --scan off."""
    return not rel.lower().endswith(SAFE_SUFFIXES)


def scan_file(path: Path, rel: str, allowed: Allowed) -> list[Finding] | None:
    """The findings of one file on disk, or None if it is not pickle-based."""
    lower = rel.lower()
    if lower.endswith(SAFE_SUFFIXES):
        return None
    named = lower.endswith(PICKLE_SUFFIXES)
    with open(path, "rb") as f:
        head = f.read(8)
        f.seek(0)
        if head.startswith(_ZIP_MAGIC):
            return _scan_zip(f, rel, allowed, named)
        if _is_proto(head):
            return _pickles(_Reader(f, path.stat().st_size), rel, allowed, strict=True)[1]
        if not named or not head:
            return None
        if head.startswith(_LZ4_MAGIC):  # joblib's compress="lz4" (the lz4 package is not a dependency)
            return [Finding(rel, "lz4-compressed (joblib): it cannot be checked here; decompress it or use another "
                                 "compression", "malformed")]
        inner = _decompressed(f, head)
        if inner is not None:
            with inner:
                reader = _Reader(inner, None)
                try:
                    start = reader.peek2()
                except (OSError, EOFError, zlib.error, lzma.LZMAError):
                    return None  # it only looked compressed
                is_pickle, findings = _pickles(reader, rel, allowed, strict=_is_proto(start))
                return findings if is_pickle else None
        is_pickle, findings = _pickles(_Reader(f, path.stat().st_size), rel, allowed, strict=False)
        return findings if is_pickle else None


def _scan_zip(f: IO[bytes], rel: str, allowed: Allowed, named: bool) -> list[Finding] | None:
    """Each *.pkl member (PyTorch: archive/data.pkl, TorchScript's constants.pkl too), read from the zip."""
    try:
        zf = zipfile.ZipFile(f)
    except (zipfile.BadZipFile, OSError) as exc:
        return [Finding(rel, f"a zip that cannot be read ({exc}): its pickles cannot be checked", "malformed")] \
            if named else None
    with zf:
        members = [i for i in zf.infolist() if i.filename.lower().endswith((".pkl", ".pickle")) and not i.is_dir()]
        if not members:
            return None
        findings: list[Finding] = []
        for info in members:
            where = f"{rel}!{info.filename}"
            try:
                with zf.open(info) as member:  # a pickle of a few MiB is read at once: genops reads by the byte
                    stream = io.BytesIO(member.read()) if info.file_size <= _WHOLE else member
                    findings += _pickles(_Reader(stream, info.file_size), where, allowed, strict=True)[1]
            except (zipfile.BadZipFile, NotImplementedError, RuntimeError) as exc:
                findings.append(Finding(where, f"cannot be read from the zip ({exc})", "malformed"))
        return findings


# ---- the job's side ----------------------------------------------------------------------------------------------


class Scanner:
    """The check as the job runs it, one file at a time as each is on disk (any thread), and its verdicts."""

    def __init__(self, mode: str, allow: Iterable[str] = ()):
        if mode not in MODES:
            raise ValueError(f"scan mode {mode!r} is not one of {', '.join(MODES)}")
        self.mode, self.allowed = mode, Allowed(tuple(allow))
        self.checked = self.pickles = 0
        self.findings: list[Finding] = []
        self.lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def __call__(self, rel: str, path: Path) -> None:
        """Check one file; with refuse, raise UnsafePickle on the first finding."""
        if not self.enabled:
            return
        found = scan_file(path, rel, self.allowed)
        with self.lock:
            self.checked += 1
            if found is None:
                return
            self.pickles += 1
            self.findings += found
        if not found:
            log.debug("scan: %s is a pickle importing only allowed globals", rel)
            return
        more = f" (and {len(found) - 1} more finding(s) in it)" if len(found) > 1 else ""
        if self.mode == "refuse":
            raise UnsafePickle(f"refused before the model goes LIVE: {found[0].line()}{more}")
        for finding in found:
            log.warning("scan (--scan warn): %s", finding.line())

    def check_all(self, root: Path, rels: Iterable[str]) -> None:
        for rel in rels:
            self(rel, root / rel)

    def facts(self, files: int) -> dict[str, str]:
        """The verdicts as the artifact's properties: short strings."""
        if not self.enabled:
            return {PROPERTY_PREFIX + "mode": "off"}
        facts = {PROPERTY_PREFIX + "scanner": SCANNER, PROPERTY_PREFIX + "mode": self.mode,
                 PROPERTY_PREFIX + "files_checked": str(self.checked), PROPERTY_PREFIX + "pickles": str(self.pickles),
                 PROPERTY_PREFIX + "findings": str(len(self.findings))}
        if self.allowed.prefixes:
            facts[PROPERTY_PREFIX + "allow"] = ",".join(self.allowed.prefixes)
        if files > self.checked:  # a re-sync's unchanged layers: their files were not brought, so not read
            facts[PROPERTY_PREFIX + "files_not_read"] = str(files - self.checked)
        if self.findings:
            text = "; ".join(f"{f.file}: {f.what}" for f in self.findings)
            facts[PROPERTY_PREFIX + "findings_list"] = text if len(text) <= 1000 else text[:997] + "..."
        return facts

