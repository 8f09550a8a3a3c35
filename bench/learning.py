"""Learning benchmark: our policy's held-out accuracy and macro-F1 against off-the-shelf learners.

Usage::

    pip install "otonom-trainer[bench]"      # scikit-learn and d3rlpy, benchmark only
    .venv/bin/python bench/learning.py                       # the synthetic default
    .venv/bin/python bench/learning.py --train A.npz --test B.npz [--train C.npz --test D.npz]
    .venv/bin/python bench/learning.py --data reports/pipeline/RUN [--synthetic]
    options: [--seeds 3] [--learners majority,logreg,hgb,d3rlpy,hgb+teacher,d3rlpy+teacher,ours]
             [--quick] [--out FILE.json] [--md]

Every learner fits on the same train file and is scored on the same held-out file (both read
with ``otonom_schema.load_dataset``), once per seed:

* ``majority``: the train file's most common action, predicted for every held-out row;
* ``logreg``: scikit-learn's ``LogisticRegression`` (``max_iter=1000``) after a
  ``StandardScaler`` (the features' scales differ; unscaled, lbfgs stops short of converging);
* ``hgb``: scikit-learn's ``HistGradientBoostingClassifier`` at its defaults;
* ``d3rlpy``: d3rlpy's ``DiscreteBC`` at its defaults (batch 100, Adam lr 1e-3, ``beta`` 0.5)
  but our policy's net size (hidden ``[hidden_dim] * num_layers``: 128, 128), 20 epochs of
  ``rows // 100`` steps, on the CPU;
* ``hgb+teacher``, ``d3rlpy+teacher``: the same two on the train file plus the teacher rows
  ``ours`` adds at that seed (the very same rows; ``d3rlpy+teacher`` is slow: 20 epochs of
  200,000 rows are 41,000 steps, over 20 CPU minutes a seed);
* ``ours``: ``otonom_trainer``'s ``BehaviorCloningTrainer`` configured as ``otonom-train
  pipeline`` configures it (stage 4, ``otonom_trainer.pipeline.training_config`` at
  ``PipelineConfig``'s defaults: epochs, batch size, width, teacher rows labelled by the
  pipeline's strategy, everything else ``TrainingConfig``'s defaults, ``device="auto"``; its
  own time split keeps the latest 10 % of the train file's dates for early stopping and draws
  the teacher rows' sources from the rest), exported to ONNX and scored through the runtime's
  ``load_rl_policy`` as the pipeline's stage 5 does. A file whose teacher is not the
  pipeline's strategy (some train row's stored action differs from what that strategy
  decides) gets no teacher rows, and its notes say why.

The baselines fit on the whole train file (plus the teacher rows for the ``+teacher`` ones).
Seeds: the pipeline's own seed (8) and the next ones; the first seed of ``ours`` is the main
job's training (same held-out accuracy, 0.8701). Accuracy and macro-F1 (the mean
of the HOLD, BUY and SELL F1, 0 for a class never predicted: ``otonom_trainer.metrics``) are
computed by the same code for every learner; the table shows mean +- sample standard deviation
over the seeds (the JSON adds min, max and each run), and the CPU seconds of fit + predict
(process time, all threads).

Datasets: with no ``--train``/``--test`` pair and no ``--data`` folder, the synthetic default:
the files the main job (``python3 dev.py run`` = ``otonom-train pipeline``) writes,
``offline_dataset.npz`` and ``offline_dataset_test.npz``, made by running the pipeline into a
temporary folder (its datasets stage comes before training, so it runs with ``--epochs 1``).
``--synthetic`` adds it to the files given. ``--data DIR``: a folder holding those two files,
or a pipeline report folder (``DIR/data/``).

``--quick`` (the test's mode): one seed, 2 epochs for ``d3rlpy`` and ``ours``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import otonom_schema as s
from otonom_runtime.strategy import load_strategy
from otonom_trainer.config import TrainingConfig
from otonom_trainer.errors import DEFAULT_BAND, error_breakdown
from otonom_trainer.metrics import CLASS_NAMES, classification_metrics, confusion_matrix
from otonom_trainer.pipeline import PipelineConfig

ROOT = Path(__file__).resolve().parents[1]
TRAIN_FILE, TEST_FILE = "offline_dataset.npz", "offline_dataset_test.npz"
LEARNERS = {
    "majority": "majority class",
    "logreg": "logistic regression",
    "hgb": "HistGradientBoosting",
    "d3rlpy": "d3rlpy DiscreteBC",
    "hgb+teacher": "HistGradientBoosting + our teacher rows",
    "d3rlpy+teacher": "d3rlpy DiscreteBC + our teacher rows",
    "ours": "ours (pipeline defaults)",
}
D3RLPY_EPOCHS = 20
QUICK_EPOCHS = 2


@dataclass(frozen=True)
class Pair:
    """One benchmark case: a train file and its held-out file."""

    name: str
    train: Path
    test: Path


@dataclass(frozen=True)
class Case:
    """A loaded pair, what every learner gets."""

    pair: Pair
    train: s.OfflineDataset
    test: s.OfflineDataset
    work: Path  # a scratch folder for this pair's model files
    epochs: int | None  # None: the learner's own (20); --quick: 2


# -- the datasets -------------------------------------------------------------------------


def synthetic_default(work: Path) -> Pair:
    """Run the main job's pipeline into ``work`` (its own SQLite store, model and report
    folders) and return the two datasets its stage 3 wrote."""
    cmd = [
        sys.executable, "-m", "otonom_trainer", "pipeline", "--quiet", "--no-promote",
        "--database-url", f"sqlite:///{work / 'otonom.db'}", "--model-dir", str(work / "models"),
        "--report-dir", str(work / "reports"), "--run-name", "learning", "--epochs", "1",
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, check=False, capture_output=True, text=True)
    data = work / "reports" / "learning" / "data"
    if done.returncode not in (0, 1) or not (data / TEST_FILE).is_file():  # 1: the gate said no
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise SystemExit(f"the pipeline failed (exit {done.returncode}): {tail[0]}")
    return Pair("synthetic default", data / TRAIN_FILE, data / TEST_FILE)


def folder_pair(folder: Path) -> Pair:
    """The two datasets in ``folder`` or in ``folder/data`` (a pipeline report folder)."""
    for where in (folder, folder / "data"):
        if (where / TRAIN_FILE).is_file() and (where / TEST_FILE).is_file():
            name = folder.resolve().parent.name if folder.name == "data" else folder.name
            return Pair(name, where / TRAIN_FILE, where / TEST_FILE)
    raise SystemExit(f"{folder} holds no {TRAIN_FILE} and {TEST_FILE} (nor does {folder}/data)")


def pairs_from_args(args: argparse.Namespace, work: Path) -> list[Pair]:
    trains, tests = args.train or [], args.test or []  # paired: checked by parse()
    pairs = [Pair(str(a), a, b) for a, b in zip(trains, tests, strict=True)]
    pairs += [folder_pair(d) for d in args.data or []]
    if args.synthetic or not pairs:
        work.mkdir(parents=True, exist_ok=True)
        pairs.insert(0, synthetic_default(work))
    return pairs


# -- the learners: each returns the predicted actions of the held-out rows ----------------


Fit = tuple[np.ndarray, dict[str, Any]]  # the held-out rows' predicted actions, notes
Learner = Callable[[Case, int], Fit]


def fit_majority(case: Case, seed: int) -> Fit:
    majority = int(np.argmax(np.bincount(case.train.actions, minlength=len(CLASS_NAMES))))
    return np.full(len(case.test), majority, dtype=np.int64), {"class": CLASS_NAMES[majority]}


def fit_logreg(case: Case, seed: int) -> Fit:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
    model.fit(case.train.states, case.train.actions)
    iterations = int(np.max(model[-1].n_iter_))
    return np.asarray(model.predict(case.test.states), dtype=np.int64), {"n_iter": iterations}


def fit_hgb(case: Case, seed: int) -> Fit:
    from sklearn.ensemble import HistGradientBoostingClassifier

    model = HistGradientBoostingClassifier(random_state=seed)
    model.fit(case.train.states, case.train.actions)
    notes = {"n_iter": int(model.n_iter_), "early_stopping": bool(model.do_early_stopping_)}
    return np.asarray(model.predict(case.test.states), dtype=np.int64), notes


def _import_d3rlpy() -> Any:
    """d3rlpy, imported quietly (gym prints a notice on stderr when d3rlpy imports it)."""
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        import d3rlpy

    logging.getLogger("d3rlpy").setLevel(logging.ERROR)
    return d3rlpy


def fit_d3rlpy(case: Case, seed: int) -> Fit:
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),  # d3rlpy's structlog notes
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        return _d3rlpy_bc(case, seed)


def _d3rlpy_bc(case: Case, seed: int) -> Fit:
    d3rlpy = _import_d3rlpy()
    from d3rlpy.dataset import MDPDataset
    from d3rlpy.models.encoders import VectorEncoderFactory

    x, y = np.ascontiguousarray(case.train.states), case.train.actions.reshape(-1, 1)
    n = len(case.train)
    terminals = np.zeros(n, dtype=np.float32)
    terminals[-1] = 1.0
    data = MDPDataset(
        x, y, np.zeros(n, dtype=np.float32), terminals,
        action_space=d3rlpy.constants.ActionSpace.DISCRETE, action_size=len(CLASS_NAMES),
    )  # fmt: skip
    # our policy's shape: the pipeline's width, TrainingConfig's number of hidden layers
    layers = TrainingConfig.__dataclass_fields__["num_layers"].default
    hidden = [PipelineConfig().hidden_dim] * layers
    config = d3rlpy.algos.DiscreteBCConfig(
        encoder_factory=VectorEncoderFactory(hidden_units=hidden)
    )
    d3rlpy.seed(seed)
    bc = config.create(device="cpu:0")
    per_epoch = max(1, n // config.batch_size)
    epochs = case.epochs or D3RLPY_EPOCHS
    bc.fit(
        data,
        n_steps=per_epoch * epochs,
        n_steps_per_epoch=per_epoch,
        show_progress=False,
        save_interval=10**9,
        experiment_name="learning",
        with_timestamp=False,
        logger_adapter=d3rlpy.logging.NoopAdapterFactory(),  # no d3rlpy_logs/ folder
    )
    pred = np.asarray(bc.predict(np.ascontiguousarray(case.test.states)), dtype=np.int64)
    return pred, {"epochs": epochs, "steps": per_epoch * epochs, "batch_size": config.batch_size}


def ours_config(case: Case, seed: int) -> tuple[TrainingConfig, str | None]:
    """The pipeline's stage-4 config (``training_config``) for this file and seed, and why it
    trains without teacher rows (None: with them). A file whose teacher is not the pipeline's
    strategy (``check_teacher``: another action on some train row) gets none."""
    from otonom_trainer.augment import check_teacher
    from otonom_trainer.pipeline import training_config
    from otonom_trainer.train import split_rows

    pc = PipelineConfig(quiet=True)
    cfg = training_config(pc, str(case.pair.train), str(case.work / f"ours-{seed}"))
    strategy_path = ROOT / cfg.teacher_strategy  # the pipeline's default, in this checkout
    cfg = cfg.replace(seed=seed, max_epochs=case.epochs or pc.epochs,
                      teacher_strategy=str(strategy_path))  # fmt: skip
    if cfg.teacher_rows == 0:
        return cfg, "teacher_rows 0"
    split = split_rows(case.train.dates, cfg.val_fraction, cfg.split, cfg.seed)
    strategy = load_strategy(cfg.teacher_strategy).with_rl(False)
    wrong = check_teacher(case.train, split.train, strategy)
    if wrong:
        return cfg.replace(teacher_rows=0), f"{cfg.teacher_strategy} is not its teacher"
    return cfg, None


def with_our_teacher_rows(case: Case, seed: int) -> tuple[Case, dict[str, Any]]:
    """``case`` with the teacher rows ours adds at ``seed`` appended to its train file (the
    baselines fit on the whole file plus exactly those rows)."""
    from otonom_trainer.augment import with_teacher_rows
    from otonom_trainer.train import split_rows

    cfg, why = ours_config(case, seed)
    if why is not None:
        return case, {"teacher_rows": 0, "why": why}
    split = split_rows(case.train.dates, cfg.val_fraction, cfg.split, cfg.seed)
    _, extra = with_teacher_rows(case.train, split.train, cfg)
    assert extra is not None
    t = case.train
    train = s.OfflineDataset(
        np.concatenate([t.states, extra.states]), np.concatenate([t.actions, extra.actions]),
        np.concatenate([t.strengths, extra.strengths]), np.concatenate([t.symbols, extra.symbols]),
        np.concatenate([t.dates, extra.dates]), t.metadata,
    )  # fmt: skip
    return dataclasses.replace(case, train=train), {"teacher_rows": len(extra)}


def fit_hgb_teacher(case: Case, seed: int) -> Fit:
    more, notes = with_our_teacher_rows(case, seed)
    pred, fit_notes = fit_hgb(more, seed)
    return pred, {**notes, **fit_notes}


def fit_d3rlpy_teacher(case: Case, seed: int) -> Fit:
    more, notes = with_our_teacher_rows(case, seed)
    pred, fit_notes = fit_d3rlpy(more, seed)
    return pred, {**notes, **fit_notes}


def fit_ours(case: Case, seed: int) -> Fit:
    """The pipeline's stage 4 (training + export, ``training_config``: teacher rows included
    when the pipeline's strategy is the file's teacher) and stage 5 (the ONNX model on the
    held-out file through the runtime)."""
    from otonom_runtime import load_rl_policy
    from otonom_trainer.train import BehaviorCloningTrainer

    cfg, why = ours_config(case, seed)
    trainer = BehaviorCloningTrainer(cfg, out=io.StringIO())
    m = trainer.train()
    assert trainer.onnx_path is not None
    policy = load_rl_policy(trainer.onnx_path)
    actions, _, _ = policy.predict_batch(np.ascontiguousarray(case.test.states))
    errors = None
    if why is None:  # the pipeline's strategy is the file's teacher
        errors = error_breakdown(
            case.test.states, case.test.actions, np.asarray(actions, dtype=np.int64),
            load_strategy(cfg.teacher_strategy).with_rl(False),
        ).to_dict()  # fmt: skip
    notes = {
        "epochs_run": m.epochs_run,
        "best_epoch": m.best_epoch,
        "stopped_early": m.stopped_early,
        "train_size": m.train_size,
        "val_size": m.val_size,
        "val_acc": m.val_action_acc,
        "teacher_rows": m.teacher_rows,
        **({"why_no_teacher_rows": why} if why else {}),
        "errors": errors,
    }
    return np.asarray(actions, dtype=np.int64), notes


FIT: dict[str, Learner] = {
    "majority": fit_majority,
    "logreg": fit_logreg,
    "hgb": fit_hgb,
    "d3rlpy": fit_d3rlpy,
    "hgb+teacher": fit_hgb_teacher,
    "d3rlpy+teacher": fit_d3rlpy_teacher,
    "ours": fit_ours,
}


# -- measuring ----------------------------------------------------------------------------


def score(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, float]:
    """(accuracy, macro-F1) over HOLD, BUY and SELL."""
    cm = confusion_matrix(y_true, y_pred)
    f1 = [c.f1 for c in classification_metrics(cm)]
    return float(np.trace(cm)) / float(cm.sum()), float(np.mean(f1))


def spread(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def shares(ds: s.OfflineDataset) -> dict[str, float]:
    return {a.name: n / len(ds) for a, n in ds.action_counts().items()}


def run_case(case: Case, learners: list[str], seeds: list[int]) -> dict[str, Any]:
    """Every learner on one pair, once per seed (seeds outermost, so a busy spell of the
    machine hits every learner alike)."""
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in learners}
    for seed in seeds:
        for key in learners:
            t0 = time.process_time()
            pred, notes = FIT[key](case, seed)
            cpu = time.process_time() - t0
            acc, f1 = score(case.test.actions, pred)
            runs[key].append(
                {"seed": seed, "accuracy": acc, "macro_f1": f1, "cpu_s": cpu, "notes": notes}
            )
            print(f"  {case.pair.name} seed {seed}: {LEARNERS[key]} {acc:.4f} / {f1:.4f}",
                  file=sys.stderr, flush=True)  # fmt: skip
    return {
        "name": case.pair.name,
        "train": str(case.pair.train),
        "test": str(case.pair.test),
        "train_rows": len(case.train),
        "test_rows": len(case.test),
        "train_shares": shares(case.train),
        "test_shares": shares(case.test),
        "learners": {
            k: {
                "label": LEARNERS[k],
                "accuracy": spread([r["accuracy"] for r in v]),
                "macro_f1": spread([r["macro_f1"] for r in v]),
                "cpu_s": spread([r["cpu_s"] for r in v]),
                "runs": v,
            }
            for k, v in runs.items()
        },
    }


# -- the tables ---------------------------------------------------------------------------


def _pm(x: dict[str, float]) -> str:
    return f"{x['mean']:.4f} ± {x['sd']:.4f}"


def _seeds(seeds: list[int]) -> str:
    return f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''} ({', '.join(map(str, seeds))})"


def _shares_text(d: dict[str, float]) -> str:
    return ", ".join(f"{k} {100 * v:.1f} %" for k, v in d.items())


def text_table(result: dict[str, Any], seeds: list[int]) -> str:
    lines = [
        f"\n{result['name']}: train {result['train_rows']:,} rows "
        f"({_shares_text(result['train_shares'])}), held-out {result['test_rows']:,} rows "
        f"({_shares_text(result['test_shares'])}); {_seeds(seeds)}",
        f"  {'learner':<28}{'accuracy':>18}{'macro-F1':>18}{'CPU s':>9}",
    ]
    for r in result["learners"].values():
        lines.append(
            f"  {r['label']:<28}{_pm(r['accuracy']):>18}{_pm(r['macro_f1']):>18}"
            f"{r['cpu_s']['mean']:>9.1f}"
        )
    return "\n".join(lines)


def markdown_table(results: list[dict[str, Any]], seeds: list[int]) -> str:
    lines = [
        f"| dataset | learner | accuracy (mean ± sd, {_seeds(seeds)}) | macro-F1 | CPU s |",
        "|---|---|---|---|---|",
    ]
    for res in results:
        for r in res["learners"].values():
            lines.append(
                f"| {res['name']} | {r['label']} | {_pm(r['accuracy'])} | {_pm(r['macro_f1'])} "
                f"| {r['cpu_s']['mean']:.1f} |"
            )
    return "\n".join(lines)


def errors_table(results: list[dict[str, Any]]) -> str:
    """Where ours errs on each dataset (its first seed; ``otonom_trainer.errors``): per
    teacher action, per volatility regime, near / far from the vote and tech thresholds."""
    lines = [
        "| dataset | group | rows | errors | error rate | share of errors |",
        "|---|---|---|---|---|---|",
    ]
    for res in results:
        ours = res["learners"].get("ours")
        errors = ours["runs"][0]["notes"].get("errors") if ours else None
        for g in (errors or {}).get("groups", []):
            lines.append(
                f"| {res['name']} | {g['kind']}: {g['name']} | {g['rows']} | {g['errors']} | "
                f"{g['error_rate']:.3f} | {g['error_share']:.3f} |"
            )
    return "\n".join(lines) if len(lines) > 2 else ""


# -- the command --------------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=Path, action="append", help="a train dataset (.npz)")
    p.add_argument("--test", type=Path, action="append", help="its held-out dataset (.npz)")
    p.add_argument("--data", type=Path, action="append", help=f"a folder with {TRAIN_FILE} and "
                   f"{TEST_FILE} (or a pipeline report folder: DIR/data/)")  # fmt: skip
    p.add_argument("--synthetic", action="store_true", help="also the synthetic default")
    p.add_argument("--seeds", type=int, default=3, help="seeds per learner (default 3)")
    p.add_argument("--learners", default=",".join(LEARNERS), help="comma-separated subset of "
                   f"{', '.join(LEARNERS)}")  # fmt: skip
    p.add_argument("--quick", action="store_true", help="1 seed, 2 epochs (the test's mode)")
    p.add_argument("--out", type=Path, help="write the results as JSON")
    p.add_argument("--md", action="store_true", help="also print a markdown table")
    args = p.parse_args(argv)
    unknown = sorted(set(args.learners.split(",")) - set(LEARNERS))
    if unknown or args.seeds < 1:
        p.error(f"unknown learners {unknown}" if unknown else "--seeds must be >= 1")
    trains, tests = args.train or [], args.test or []
    if len(trains) != len(tests):  # before the learners' imports (d3rlpy's take seconds)
        raise SystemExit(f"got {len(trains)} --train and {len(tests)} --test; expected pairs")
    return args


def check_extras(learners: list[str]) -> None:
    needs = {"logreg": "sklearn", "hgb": "sklearn", "d3rlpy": "d3rlpy", "hgb+teacher": "sklearn",
             "d3rlpy+teacher": "d3rlpy"}  # fmt: skip
    for module in sorted({needs[k] for k in learners if k in needs}):
        try:
            if module == "d3rlpy":
                _import_d3rlpy()
            else:
                __import__(module)
        except ImportError:
            msg = f'{module} is not installed: pip install "otonom-trainer[bench]"'
            raise SystemExit(msg) from None


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for dist in ("torch", "scikit-learn", "d3rlpy", "numpy"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[dist] = md.version(dist)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    learners = [k for k in LEARNERS if k in args.learners.split(",")]
    check_extras(learners)
    seeds = [PipelineConfig().seed + i for i in range(1 if args.quick else args.seeds)]
    epochs = QUICK_EPOCHS if args.quick else None
    results = []
    with tempfile.TemporaryDirectory(prefix="otonom-bench-learning-") as tmp:
        for i, pair in enumerate(pairs_from_args(args, Path(tmp) / "synthetic")):
            case = Case(
                pair, s.load_dataset(pair.train), s.load_dataset(pair.test), Path(tmp) / str(i),
                epochs,
            )  # fmt: skip
            results.append(run_case(case, learners, seeds))
            print(text_table(results[-1], seeds), flush=True)
    if args.md:
        print("\n" + markdown_table(results, seeds))
        where = errors_table(results)
        if where:
            print(f"\nWhere ours errs (seed {seeds[0]}, band {DEFAULT_BAND}):\n\n{where}")
    if args.out:
        doc = {
            "command": ["bench/learning.py", *(sys.argv[1:] if argv is None else argv)],
            "quick": args.quick,
            "seeds": seeds,
            "versions": versions(),
            "datasets": results,
        }
        args.out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
