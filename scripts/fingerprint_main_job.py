#!/usr/bin/env python3
"""Fingerprint of the main job's outputs: is the behaviour unchanged by a refactoring?

    .venv/bin/python scripts/fingerprint_main_job.py [--epochs N] [--keep DIR]

runs ``otonom-train pipeline`` (the main job, ``python3 dev.py run``) on the embedded default
into a scratch folder (its own SQLite store, model and report folders: nothing in the checkout
is written) and prints, as JSON, the sha256 of

* each dataset the pipeline wrote (``offline_dataset*.npz``: every array, and the metadata
  without its ``created_at``; the file's own bytes hold zip times),
* every decision row of every run (all columns but the row id; runs in id order),
* the trained weights (every tensor of the ONNX export's initializers, by name), and the
  exported model's digest.

Run it before and after a change that must not change behaviour, and compare the two outputs
(`diff`). Training runs on the CPU at the pipeline's fixed seed, so the weights are
reproducible on one machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _dataset(path: Path) -> str:
    import numpy as np

    h = hashlib.sha256()
    with np.load(path, allow_pickle=False) as data:
        for name in sorted(data.files):
            array = data[name]
            if name == "metadata":
                meta = json.loads(str(array))
                meta.pop("created_at", None)
                array = np.array(json.dumps(meta, sort_keys=True))
            h.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
            h.update(array.tobytes())
    return h.hexdigest()


def _decisions(db: Path) -> dict[str, object]:
    con = sqlite3.connect(db)
    try:
        cols = [r[1] for r in con.execute("PRAGMA table_info(decisions)") if r[1] != "id"]
        h = hashlib.sha256()
        n = 0
        query = f"SELECT {', '.join(cols)} FROM decisions ORDER BY run_id, symbol_id, date"
        for row in con.execute(query):
            h.update(repr(row).encode())
            n += 1
        runs = con.execute("SELECT COUNT(*) FROM backtest_runs").fetchone()[0]
    finally:
        con.close()
    return {"rows": n, "runs": runs, "sha256": h.hexdigest()}


def _weights(model: Path) -> dict[str, str]:
    import onnx
    from onnx import numpy_helper

    from otonom_runtime.integrity import model_digest

    proto = onnx.load(str(model))
    h = hashlib.sha256()
    for init in sorted(proto.graph.initializer, key=lambda t: t.name):
        h.update(init.name.encode())
        h.update(numpy_helper.to_array(init).tobytes())
    return {"initializers_sha256": h.hexdigest(), "digest": model_digest(model.read_bytes())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=None, help="training epochs (default: the job's)")
    ap.add_argument("--keep", type=Path, default=None, help="work in DIR and keep it")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        work = args.keep or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        db = work / "otonom.db"
        cmd = [
            sys.executable, "-m", "otonom_trainer", "pipeline", "--quiet", "--no-promote",
            "--database-url", f"sqlite:///{db}", "--model-dir", str(work / "models"),
            "--report-dir", str(work / "reports"), "--run-name", "fingerprint",
        ]  # fmt: skip
        if args.epochs is not None:
            cmd += ["--epochs", str(args.epochs)]
        done = subprocess.run(cmd, cwd=ROOT, check=False)
        if done.returncode not in (0, 1):  # 1: the gate rejected the model, still comparable
            print(f"pipeline failed with exit status {done.returncode}", file=sys.stderr)
            return 2
        state = json.loads((work / "reports" / "fingerprint" / "pipeline_state.json").read_text())
        out: dict[str, object] = {"pipeline_exit": done.returncode}
        for key in ("train_path", "test_path"):
            path = Path(state["state"][key] if "state" in state else state[key])
            out[path.name] = _dataset(path)
        out["decisions"] = _decisions(db)
        models = sorted((work / "models").glob("*/policy_best.onnx"))
        out["weights"] = _weights(models[-1])
        print(json.dumps(out, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
