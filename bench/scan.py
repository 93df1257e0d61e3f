"""`make bench` (also alone: python -m bench.scan [--gib 1]): the pickle check's cost per GiB of model, on files made
here in a temporary directory (no stack needed):

- a PyTorch-style zip checkpoint of --gib GiB (tensors of 64 MiB each, written as torch.save does: stored members
  archive/data/<n> beside archive/data.pkl): the scan reads the zip's directory and data.pkl only;
- a joblib file of the same size (numpy arrays, uncompressed): the scan skips each array's raw bytes by seek;
- a plain pickle (protocol 4) of a numpy array of --gib / 4 GiB: the bytes are in the pickle itself, so the walk
  reads them all (the worst case: what pickle.load would read too).

- a PyTorch-style zip of 10,000 small tensors: the cost is per tensor (its data.pkl's opcodes), not per byte.

Each is timed twice, just after it was written (its bytes in the page cache), and printed as seconds and MiB/s.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import tempfile
import time
from pathlib import Path

from modelsync.scan import Allowed, scan_file


def _time(path: Path, allowed: Allowed) -> tuple[float, list[object] | None]:
    start = time.perf_counter()
    found = scan_file(path, path.name, allowed)
    return time.perf_counter() - start, list(found) if found is not None else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scan")
    parser.add_argument("--gib", type=float, default=1.0)
    args = parser.parse_args(argv)
    size = int(args.gib * (1 << 30))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-scan-") as tmp:
        root = Path(tmp)
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests.support.pickles import torch_checkpoint
        n = max(1, size // (64 << 20))
        cases = [("torch zip", torch_checkpoint(root / "model.pt", {f"t{i}": (16 << 20,) for i in range(n)},
                                                fill=b"\x01\x02\x03\x04"), Allowed()),
                 ("torch zip, 10,000 tensors", torch_checkpoint(root / "many.pt", {f"layer{i}.weight": (16, 16)
                                                                                   for i in range(10_000)}),
                  Allowed())]
        try:
            import joblib
            import numpy as np
            joblib.dump({f"a{i}": np.full(8 << 20, i, dtype=np.float64) for i in range(n)}, root / "model.joblib")
            cases.append(("joblib", root / "model.joblib", Allowed()))
            (root / "array.pkl").write_bytes(pickle.dumps(np.ones(size // 4 // 8), protocol=4))
            cases.append(("plain pickle, in-band bytes", root / "array.pkl", Allowed()))
        except ImportError:
            print("numpy/joblib not installed: only the torch zip is measured", file=sys.stderr)
        for label, path, allowed in cases:
            total = path.stat().st_size
            for run in ("first", "again"):
                seconds, found = _time(path, allowed)
                assert found == [], (label, found)
                rows.append((label, run, total, seconds))
    print("| file | run | size | seconds | MiB/s |\n|---|---|---|---|---|")
    for label, run, total, seconds in rows:
        print(f"| {label} | {run} | {total / (1 << 20):.0f} MiB | {seconds:.4f} | "
              f"{total / (1 << 20) / max(seconds, 1e-9):,.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
