"""The pickle check (modelsync/scan.py) on real pickles: made here by pickle, numpy, joblib and scikit-learn, and a
PyTorch-style zip checkpoint; the malicious ones would run `touch <marker>` when loaded, and the marker file must not
appear (nothing is ever loaded)."""

from __future__ import annotations

import logging
import os
import pickle
import struct
import zipfile
from pathlib import Path

import pytest

from modelsync import scan
from modelsync.scan import ALLOWED, Allowed, Scanner, UnsafePickle, never, parse_allow, scan_file
from tests.support.models import raw_weights
from tests.support.pickles import Malicious, torch_checkpoint, torch_pickle

np = pytest.importorskip("numpy")


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "a scanned pickle was loaded"


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _whats(found: list[scan.Finding] | None) -> list[str]:
    assert found is not None, "not taken for a pickle"
    return [f.what for f in found]


@pytest.mark.parametrize("protocol", range(6))
def test_a_malicious_pickle_is_found_in_every_protocol(tmp_path, marker, protocol):
    path = _write(tmp_path / "model.pkl", pickle.dumps({"w": Malicious(f"touch {marker}")}, protocol=protocol))
    found = scan_file(path, "model.pkl", Allowed())
    assert _whats(found) == [f"{os.system.__module__}.system"]
    assert found[0].kind == "never"


def test_pickles_are_told_by_content_not_by_name(tmp_path, marker):
    data = pickle.dumps(Malicious(f"touch {marker}"), protocol=4)
    assert _whats(scan_file(_write(tmp_path / "weights.dat", data), "weights.dat", Allowed())) == ["posix.system"]
    # a format whose loader never unpickles is not read, whatever its bytes
    assert scan_file(_write(tmp_path / "model.safetensors", data), "model.safetensors", Allowed()) is None
    assert scan_file(_write(tmp_path / "raw.bin", raw_weights(1 << 20)), "raw.bin", Allowed()) is None
    assert scan_file(_write(tmp_path / "config.json", b'{"a": 1}'), "config.json", Allowed()) is None
    assert scan_file(_write(tmp_path / "m.gguf", b"GGUF\x03\0\0\0" + os.urandom(4096)), "m.gguf", Allowed()) is None


def test_a_raw_bin_that_breaks_before_importing_or_calling_is_no_pickle(tmp_path):
    """Raw weights start with EXT1/2/4 one time in 85: a loader stops there, so they are not refused. Random files
    were refused 254 times in 20 000 before this rule."""
    tail = bytes([0xff]) + os.urandom(4096)   # 0xff is no opcode: the walk breaks right after the EXT
    for head in (b"\x82\x04", b"\x83\x04\x01", b"\x84\x04\x00\x00\x01", b"N\x82\x07"):
        assert scan_file(_write(tmp_path / "w.bin", head + tail), "w.bin", Allowed()) is None, head
    assert [scan_file(_write(tmp_path / "w.bin", bytes([0x82, n]) + tail), "w.bin", Allowed()) for n in range(256)] \
        == [None] * 256


def test_a_raw_bin_that_calls_an_extension_before_it_breaks_is_refused(tmp_path):
    """EXT1 then REDUCE: a loader with code 4 registered runs it before the break. Nothing announces a pickle."""
    found = scan_file(_write(tmp_path / "w.bin", b"\x82\x04)R\xff" + os.urandom(64)), "w.bin", Allowed())
    assert [f.kind for f in found] == ["unresolved", "malformed"]
    assert "EXT1 at byte 0" in found[0].what and "not a pickle that can be followed" in found[1].what
    # an import before the break is refused as before, with or without a call after it
    found = scan_file(_write(tmp_path / "w.bin", b"cos\nsystem\n\xff"), "w.bin", Allowed())
    assert _whats(found)[0] == "os.system" and found[-1].kind == "malformed"


def test_a_complete_pickle_without_proto_is_still_read(tmp_path):
    """Protocol 0 has no PROTO: a whole one, even in a .bin, is a pickle and its extension is refused."""
    found = scan_file(_write(tmp_path / "w.bin", b"\x82\x04."), "w.bin", Allowed())
    assert [f.kind for f in found] == ["unresolved"]


def test_stack_global_is_followed_through_the_memo(tmp_path, marker):
    """Decoy strings naming an allowed global are pushed last; STACK_GLOBAL takes os/system from the memo."""
    def unicode(text: str) -> bytes:
        return b"\x8c" + bytes([len(text)]) + text.encode()
    data = (b"\x80\x04" + unicode("os") + b"\x94" + unicode("system") + b"\x94" + b"0"   # MEMOIZE 0, 1; POP
            + unicode("torch._utils") + unicode("_rebuild_tensor_v2") + b"0" + b"0"    # decoys, popped
            + b"h\x00" + b"h\x01" + b"\x93"                                          # BINGET 0, 1; STACK_GLOBAL
            + unicode(f"touch {marker}") + b"\x85R.")                                  # TUPLE1 REDUCE STOP
    found = scan_file(_write(tmp_path / "m.pkl", data), "m.pkl", Allowed())
    assert _whats(found) == ["os.system"]


def test_a_stack_global_whose_name_is_not_a_pushed_string_is_a_finding(tmp_path):
    # module = _codecs.encode("os", "latin1") (a call's result, not a string the pickle pushed)
    data = (b"\x80\x04\x8c\x07_codecs\x8c\x06encode\x93\x8c\x02os\x8c\x06latin1\x86R"
            b"\x8c\x06system\x93N\x85R.")
    found = scan_file(_write(tmp_path / "m.pkl", data), "m.pkl", Allowed())
    assert [f.kind for f in found] == ["unresolved"]
    assert "STACK_GLOBAL" in found[0].line()


def test_copyreg_extension_codes_are_findings(tmp_path):
    found = scan_file(_write(tmp_path / "m.pkl", b"\x80\x02\x82\x07)R."), "m.pkl", Allowed())
    assert [f.kind for f in found] == ["unresolved"]


def test_a_pickle_after_a_pickle_is_checked_too(tmp_path, marker):
    """PyTorch's legacy format is five pickles in a row; a loader may read the next."""
    data = pickle.dumps(119547037146038801333356, protocol=2) + pickle.dumps(Malicious(f"touch {marker}"), protocol=2)
    assert _whats(scan_file(_write(tmp_path / "old.pt", data), "old.pt", Allowed())) == ["posix.system"]


def test_a_broken_pickle_is_refused(tmp_path):
    data = pickle.dumps({"a": [1, 2, 3]}, protocol=4)[:-6]
    found = scan_file(_write(tmp_path / "m.pkl", data), "m.pkl", Allowed())
    assert [f.kind for f in found] == ["malformed"]


def test_a_pytorch_zip_checkpoint_is_accepted(tmp_path):
    path = torch_checkpoint(tmp_path / "model.pt", {"layer.weight": (4, 8), "layer.bias": (4,)})
    with zipfile.ZipFile(path) as zf:
        assert sorted(zf.namelist()) == ["archive/byteorder", "archive/data.pkl", "archive/data/0", "archive/data/1",
                                         "archive/version"]
    assert scan_file(path, "model.pt", Allowed()) == []
    assert b"ctorch._utils\n_rebuild_tensor_v2\n" in torch_pickle({"w": (1,)})


def test_a_malicious_pytorch_checkpoint_is_refused_whatever_its_name(tmp_path, marker):
    path = torch_checkpoint(tmp_path / "pytorch_model.bin", {"w": (2, 2)}, extra={"x": Malicious(f"touch {marker}")})
    found = scan_file(path, "sub/pytorch_model.bin", Allowed())
    assert [(f.file, f.what) for f in found] == [("sub/pytorch_model.bin!archive/data.pkl", "posix.system")]


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_numpy_arrays_pickled_by_numpy_are_accepted(tmp_path, protocol):
    value = {"a": np.arange(12.0).reshape(3, 4), "f": np.asfortranarray(np.ones((3, 4), dtype=np.float16)),
             "s": np.float64(2.5), "i": np.int32(3), "u": np.array(["ab", "c"]), "o": np.array([1, "x"], dtype=object),
             "rec": np.zeros(2, dtype=[("a", "<f4"), ("b", "i8")]), "b": b"bytes", "set": {1, 2}}
    path = _write(tmp_path / "arrays.pkl", pickle.dumps(value, protocol=protocol))
    assert scan_file(path, "arrays.pkl", Allowed()) == []


def _sklearn_model():
    sklearn = pytest.importorskip("sklearn")
    assert sklearn
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    rng = np.random.default_rng(0)
    x = rng.random((64, 4))
    return make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=3, random_state=0)).fit(x, x[:, 0] > .5)


@pytest.mark.parametrize("compress", [0, 3, "gzip", "bz2", "xz", "lzma"])
def test_a_joblib_scikit_learn_model_is_accepted_with_its_prefix(tmp_path, compress):
    joblib = pytest.importorskip("joblib")
    value = {"model": _sklearn_model(), "objects": np.array([1, "x"], dtype=object),
             "text": np.array(["abc"]), "when": np.array(["2020-01-01"], dtype="M8[s]"), "empty": np.zeros((0, 3))}
    path = tmp_path / "model.joblib"
    joblib.dump(value, path, compress=compress)
    assert scan_file(path, "model.joblib", Allowed(("sklearn.",))) == []
    refused = _whats(scan_file(path, "model.joblib", Allowed()))
    assert "sklearn.pipeline.Pipeline" in refused and all(w.startswith("sklearn.") for w in refused)


@pytest.mark.parametrize("compress", [0, 3])
def test_a_malicious_joblib_file_is_refused_even_with_sklearn_allowed(tmp_path, marker, compress):
    joblib = pytest.importorskip("joblib")
    path = tmp_path / "model.joblib"
    # arrays before and after: the raw array bytes joblib writes are skipped, the walk goes on past them
    joblib.dump({"a": np.arange(1000.0), "m": Malicious(f"touch {marker}"), "b": np.ones(7)}, path,
                compress=compress)
    assert _whats(scan_file(path, "model.joblib", Allowed(("sklearn.",)))) == ["posix.system"]


def test_a_joblib_object_array_is_checked_inside(tmp_path, marker):
    joblib = pytest.importorskip("joblib")
    path = tmp_path / "model.joblib"
    joblib.dump({"o": np.array([Malicious(f"touch {marker}"), 1], dtype=object)}, path)
    assert _whats(scan_file(path, "model.joblib", Allowed(("sklearn.",)))) == ["posix.system"]


FORBIDDEN = [("os", "system"), ("posix", "system"), ("nt", "system"), ("subprocess", "Popen"),
             ("subprocess", "check_output"), ("builtins", "eval"), ("builtins", "exec"), ("builtins", "getattr"),
             ("builtins", "__import__"), ("builtins", "compile"), ("builtins", "open"), ("runpy", "_run_code"),
             ("sys", "modules"), ("importlib", "import_module"), ("pty", "spawn"), ("socket", "socket"),
             ("torch._utils", "_rebuild_tensor_v2.__globals__"), ("collections", "OrderedDict.__init__.__globals__")]


@pytest.mark.parametrize(("module", "name"), FORBIDDEN)
def test_nothing_on_the_allow_list_or_any_prefix_allows_running_code(module, name):
    assert f"{module}.{name}" not in ALLOWED
    assert never(module, name)
    assert not Allowed()(module, name)
    assert not Allowed(("os.", "posix.", "nt.", "subprocess.", "builtins.", "runpy.", "sys.", "importlib.", "pty.",
                        "socket.", "torch.", "collections."))(module, name)


def test_the_default_allow_list_names_no_forbidden_module():
    assert not [g for g in ALLOWED if never(*g.rsplit(".", 1))]
    assert not [g for g in ALLOWED if g.split(".")[0] not in ("torch", "numpy", "collections", "_codecs", "builtins",
                                                              "joblib")]
    assert sorted(g for g in ALLOWED if g.startswith("builtins.")) == ["builtins.bytearray", "builtins.complex",
                                                                       "builtins.frozenset", "builtins.set"]


def test_a_prefix_never_reaches_through_an_attribute_path():
    allowed = Allowed(("sklearn.",))
    assert allowed("sklearn.tree._classes", "DecisionTreeClassifier")
    assert not allowed("sklearn.base", "os.system")  # find_class would walk sklearn.base.os.system
    assert Allowed(("mypkg.models.Outer.",))("mypkg.models", "Outer.Inner")  # a prefix reaching into the name
    assert not allowed("sklearnx", "Thing")


def test_scan_allow_is_parsed_and_checked():
    assert parse_allow(" sklearn., xgboost.core.Booster ,") == ("sklearn.", "xgboost.core.Booster")
    assert parse_allow(None) == ()
    for bad in ("os;rm", ".", "a..b", "sk learn."):
        with pytest.raises(ValueError):
            parse_allow(bad)


def test_refuse_raises_one_line_naming_the_file_the_global_and_the_setting(tmp_path, marker):
    joblib = pytest.importorskip("joblib")
    joblib.dump(_sklearn_model(), tmp_path / "model.joblib")
    scanner = Scanner("refuse")
    with pytest.raises(UnsafePickle) as caught:
        scanner("model.joblib", tmp_path / "model.joblib")
    line = str(caught.value)
    assert "\n" not in line and "model.joblib" in line and "sklearn." in line and "--scan-allow sklearn." in line
    _write(tmp_path / "evil.pkl", pickle.dumps(Malicious(f"touch {marker}")))
    with pytest.raises(UnsafePickle, match=r"evil\.pkl: the pickle imports posix\.system, which is never allowed"):
        Scanner("refuse", ("os.", "posix.")).check_all(tmp_path, ["evil.pkl"])


def test_warn_logs_and_goes_on_and_the_facts_say_so(tmp_path, marker, caplog):
    _write(tmp_path / "evil.pkl", pickle.dumps(Malicious(f"touch {marker}")))
    torch_checkpoint(tmp_path / "model.pt", {"w": (2, 2)})
    _write(tmp_path / "config.json", b"{}")
    scanner = Scanner("warn", ("sklearn.",))
    with caplog.at_level(logging.WARNING, logger="modelsync.scan"):
        scanner.check_all(tmp_path, ["config.json", "evil.pkl", "model.pt"])
    assert any("evil.pkl: the pickle imports posix.system" in r.getMessage() for r in caplog.records)
    facts = scanner.facts(4)
    assert facts == {"modelsync.scan.scanner": scan.SCANNER, "modelsync.scan.mode": "warn",
                     "modelsync.scan.files_checked": "3", "modelsync.scan.pickles": "2",
                     "modelsync.scan.findings": "1", "modelsync.scan.allow": "sklearn.",
                     "modelsync.scan.files_not_read": "1", "modelsync.scan.findings_list": "evil.pkl: posix.system"}
    assert all(isinstance(v, str) and len(v) <= 1000 for v in facts.values())


def test_off_reads_nothing(tmp_path, marker):
    _write(tmp_path / "evil.pkl", pickle.dumps(Malicious(f"touch {marker}")))
    scanner = Scanner("off")
    scanner.check_all(tmp_path, ["evil.pkl"])
    assert scanner.checked == 0 and scanner.facts(1) == {"modelsync.scan.mode": "off"}


def test_a_forged_length_allocates_nothing(tmp_path):
    data = b"\x80\x04\x8e" + struct.pack("<Q", 1 << 60) + b"xx"  # BINBYTES8 claiming an exabyte
    assert [f.kind for f in scan_file(_write(tmp_path / "m.pkl", data), "m.pkl", Allowed())] == ["malformed"]


def test_an_lz4_joblib_file_cannot_be_checked_so_it_is_a_finding(tmp_path):
    path = _write(tmp_path / "model.joblib", b"\x04\x22\x4d\x18" + os.urandom(256))
    assert [f.kind for f in scan_file(path, "model.joblib", Allowed())] == ["malformed"]
