"""Library code a daemon imports leaves the process's global settings alone.

One fresh interpreter sets each setting to a value none of the libraries would choose
(matplotlib backend ``svg``, 3 torch threads, the collector on, its own ``sys.stdout``; also
the torch random state and the warning filters are recorded), then
imports the three packages and calls them through their Python APIs: the runtime's equity
chart and its pyplot-style ``subplots`` (walk-forward's chart), the trainer's two plots, a real
SQLite store (synthetic bars written, read back by the raw reader), and a tiny behaviour-cloning
training with its ONNX export. After each call the settings are compared with the start. The
same probe is shown to see each kind of change (the test can fail).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

_SCRIPT = r"""
import contextlib, datetime as dt, gc, hashlib, io, json, sys, warnings
from pathlib import Path

import matplotlib
matplotlib.use("svg")
import numpy as np
import torch
torch.set_num_threads(3)
gc.enable()
out = io.StringIO()
sys.stdout = out  # the process's own stream: a library must not swap it

def snapshot():
    return {
        "backend": matplotlib.get_backend(),
        "torch_threads": torch.get_num_threads(),
        "gc": gc.isenabled(),
        "stdout": sys.stdout is out,
        "torch_rng": hashlib.sha256(torch.random.get_rng_state().numpy().tobytes()).hexdigest(),
        "warning_filters": list(map(repr, warnings.filters)),
    }

start = snapshot()
changed = {}

def check(step):
    now = snapshot()
    if now != start:
        changed[step] = now

tmp = Path(sys.argv[1])
import otonom_schema, otonom_runtime, otonom_trainer  # noqa: E401
check("import")

from otonom_runtime.plots import plot_equity, pyplot
days = np.arange("2020-01-01", "2020-03-01", dtype="datetime64[D]")
plot_equity({"x": (days, np.linspace(1.0, 1.2, days.size))}, tmp / "eq.png", title="t")
check("plot_equity")
plt = pyplot()
fig, (top, bottom) = plt.subplots(2, 1, figsize=(4, 3), sharex=True)
top.plot([0, 1], [0, 1])
fig.savefig(tmp / "wf.png")
plt.close(fig)
check("pyplot")

from otonom_runtime.store import get_session, init_db, load_history
from otonom_runtime.synth import write_synthetic
url = f"sqlite:///{(tmp / 'store.db').as_posix()}"
init_db(url)
with get_session(url) as session:
    write_synthetic(session, ["DEMO-BTC"], dt.date(2020, 1, 1), dt.date(2020, 12, 31), 7)
with get_session(url) as session:
    assert len(load_history(session, "DEMO-BTC").dates) == 366
check("store")

from otonom_schema import OfflineDataset, compute_states, save_dataset
from otonom_schema.synthetic import random_history
history = random_history(300, seed=1, vol=0.005)
states = compute_states(history)
actions = np.arange(len(states), dtype=np.int64) % 3
strengths = (actions > 0).astype(np.float32)
names = np.repeat(["S"], len(states))
ds = OfflineDataset(states, actions, strengths, names, history.dates, {"source": "test"})
save_dataset(ds, tmp / "ds.npz")
from otonom_trainer.config import TrainingConfig
from otonom_trainer.train import BehaviorCloningTrainer
cfg = TrainingConfig.from_dict({
    "dataset_path": str(tmp / "ds.npz"), "output_dir": str(tmp / "out"), "hidden_dim": 16,
    "num_layers": 1, "batch_size": 64, "max_epochs": 2, "lr": 1e-2,
}, {})
metrics = BehaviorCloningTrainer(cfg).train()
assert (tmp / "out" / "policy_best.onnx").is_file()
assert (tmp / "out" / "training_curves.png").is_file()
check("train")
from otonom_trainer.stacked import train_many
train_many(cfg.replace(output_dir=str(tmp / "many")), [1, 2], export=False)
check("train_many")

from otonom_trainer.plots import plot_confusion_matrix
plot_confusion_matrix(metrics.confusion_matrix, tmp / "cm.png")
check("trainer plots")

from otonom_trainer.ensemble import export_ensemble, train_seeds
members = train_seeds(cfg.replace(max_epochs=1), [1, 2], members_dir=tmp / "seeds")
export_ensemble(members, tmp / "ens" / "e.onnx", combine="vote")
check("ensemble")

# the probe sees each kind of change
seen = {}
rng = torch.random.get_rng_state()
for name, change, undo in [
    ("backend", lambda: matplotlib.use("agg"), lambda: matplotlib.use("svg")),
    ("torch_threads", lambda: torch.set_num_threads(1), lambda: torch.set_num_threads(3)),
    ("gc", gc.disable, gc.enable),
    ("torch_rng", lambda: torch.manual_seed(1), lambda: torch.random.set_rng_state(rng)),
    ("warning_filters", lambda: warnings.simplefilter("ignore"), lambda: warnings.filters.pop(0)),
]:
    change()
    seen[name] = snapshot() != start
    undo()
with contextlib.redirect_stdout(io.StringIO()):
    seen["stdout"] = snapshot() != start
sys.stdout = sys.__stdout__
print(json.dumps({"start": start, "changed": changed, "seen": seen}))
"""


def test_library_calls_leave_the_process_settings_alone(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    start = result["start"]
    assert (start["backend"], start["torch_threads"], start["gc"], start["stdout"]) == (
        "svg",
        3,
        True,
        True,
    )
    assert result["changed"] == {}
    assert result["seen"] == dict.fromkeys(start, True)
