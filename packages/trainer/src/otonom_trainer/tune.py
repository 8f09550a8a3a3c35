"""``otonom-train tune``: a hyperparameter search over the guide's knobs with optuna (the
``tune`` extra: ``pip install "otonom-trainer[tune]"``).

A study starts from the guide's size-based defaults (trial 0, enqueued: see
``otonom_trainer.tune_space``), then optuna's TPE sampler (seeded) proposes the next
configurations. Each trial trains the base ``TrainingConfig`` with the trial's knobs on the
trainer's own time-ordered split (validation = the latest dates; a ``split: random`` base is
refused), in a temporary folder, without an export; its value is the best epoch's validation
accuracy, or the macro-F1 of its validation confusion matrix (``objective="macro-f1"``). A
trial whose training diverges (``TrainingError``) is recorded as failed and the study goes on.

Trials share an optuna storage, so several processes or machines tune one study:

* ``journal:PATH``: an optuna JournalStorage file (appends under a file lock: processes on one
  machine or a shared file system). The command line's default is ``OUT/study.journal``.
* a database URL (``postgresql+psycopg://user@host/db``, ``sqlite:///tune.db``): optuna's
  RDBStorage, for workers on several machines.

Every worker runs ``n_trials`` trials (and stops starting new ones after ``timeout`` seconds);
the study records which dataset (its sha256), base configuration and objective it was made
for, and a worker with other ones is refused. Give each worker its own sampler ``seed``.

Every configuration tried is counted: ``TuneResult.n_tried`` is the number of the study's
finished trials (complete, failed or pruned, all workers), printed and written in
``best_config.yaml``'s header; a multiple-testing correction (a deflated Sharpe) needs it.

Outputs (with ``out_dir``; written atomically at the end): ``best_config.yaml`` (a
``TrainingConfig`` file: ``otonom-train train --config best_config.yaml``) and ``trials.csv``
(one row per trial of the study). Every option, the dataset, the space and the storage are
checked before anything is written; when no trial completes, neither file is written (the
storage keeps the failed trials: it is the study's record, other workers may share it).
optuna and torch are imported when a study runs, not with this module.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import socket
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO

from otonom_runtime.config_rules import CrossCheck, Validated, rule
from otonom_trainer.config import TrainingConfig
from otonom_trainer.tune_report import TrialRow, TuneResult, fmt_value, summary, write_results
from otonom_trainer.tune_space import SIZE_TABLE, SearchSpace, TuneError, size_row

if TYPE_CHECKING:
    import optuna

    from otonom_trainer.train import TrainingMetrics

__all__ = [
    "DEFAULT_STUDY",
    "OBJECTIVES",
    "SearchSpace",
    "TrialRow",
    "TuneError",
    "TuneOptions",
    "TuneResult",
    "add_parser",
    "tune",
]

OBJECTIVES: Final = ("accuracy", "macro-f1")
DEFAULT_STUDY: Final = "otonom-tune"
JOURNAL_PREFIX: Final = "journal:"
JOURNAL_NAME: Final = "study.journal"
# base-config fields that do not change what a trial learns: a worker may set them as it likes
_FREE_FIELDS: Final = ("dataset_path", "output_dir", "progress", "tensorboard", "device")


def _storage_ok(spec: str) -> bool:
    if spec.startswith(JOURNAL_PREFIX):
        return bool(spec[len(JOURNAL_PREFIX) :].strip())
    scheme, sep, rest = spec.partition("://")
    return bool(sep and scheme.strip() and rest.strip())


@dataclass(frozen=True)
class TuneOptions(Validated):
    """How a study runs (validated once; ``TuneError`` names the option)."""

    n_trials: int | None = field(
        default=20,
        metadata=rule(ge=1, described="an integer >= 1 (--trials N), or None (until timeout)"),
    )
    timeout: float | None = field(
        default=None, metadata=rule(gt=0, described="a number of seconds > 0, or None")
    )
    storage: str | None = field(
        default=None,
        metadata=rule(
            test=_storage_ok,
            described="journal:PATH or a database URL such as postgresql+psycopg://user@host/db",
        ),
    )
    study_name: str = field(default=DEFAULT_STUDY, metadata=rule(nonempty=True))
    objective: str = field(default="accuracy", metadata=rule(choices=OBJECTIVES))
    seed: int | None = field(
        default=None, metadata=rule(ge=0, lt=2**32, described="an integer in [0, 2**32)")
    )
    out_dir: str | None = field(default=None, metadata=rule(nonempty=True, path=True))

    _error_class = TuneError
    __cross_checks__ = (
        CrossCheck(
            lambda v: v["n_trials"] is not None or v["timeout"] is not None,
            lambda v: (
                "n_trials and timeout: both None; expected a number of trials, a "
                "timeout or both (else the study never ends)"
            ),
        ),
    )


# --- the study -----------------------------------------------------------------------------


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise TuneError(
            'otonom-train tune needs optuna: pip install "otonom-trainer[tune]"'
        ) from None
    return optuna


def open_storage(spec: str | None) -> Any:
    """The optuna storage of ``spec``: ``journal:PATH`` (its folder is created) or a database
    URL; None is optuna's in-memory storage (this process only)."""
    optuna = _optuna()
    if spec is None:
        return None
    if spec.startswith(JOURNAL_PREFIX):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(spec[len(JOURNAL_PREFIX) :]).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    try:
        shown = make_url(spec).render_as_string(hide_password=True)
    except SQLAlchemyError as exc:
        raise TuneError(f"storage: cannot read the URL {spec!r}: {exc}") from None
    try:
        return optuna.storages.RDBStorage(spec)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        hint = " (write postgresql+psycopg://...)" if "psycopg2" in str(exc) else ""
        text = " ".join(str(exc).split())[:300]
        raise TuneError(f"storage: cannot open {shown}: {text}{hint}") from None


def _study_key(
    config: TrainingConfig, space: SearchSpace, sha256: str, objective: str
) -> dict[str, Any]:
    """What every worker of one study must agree on."""
    tuned = set(space.knobs())
    fixed = {k: v for k, v in config.to_dict().items() if k not in tuned and k not in _FREE_FIELDS}
    return {"dataset_sha256": sha256, "objective": objective, "base_config": fixed}


def _check_study(study: optuna.Study, key: dict[str, Any]) -> None:
    """Record ``key`` in a new study; ``TuneError`` when a study made for another differs."""
    attrs = study.user_attrs
    for name, value in key.items():
        if name not in attrs:
            study.set_user_attr(name, value)
            continue
        if attrs[name] == value:
            continue
        if isinstance(value, Mapping):
            old = attrs[name]
            diff = sorted(k for k in set(value) | set(old) if value.get(k) != old.get(k))
            what = f"base configuration (differing: {', '.join(diff)})"
        else:
            what = f"{name} ({attrs[name]!r}, here {value!r})"
        raise TuneError(
            f"study {study.study_name!r} was made for another {what}; expected the same "
            "dataset, base configuration and objective in every worker (or a new --study-name)"
        )


def _value(metrics: TrainingMetrics, objective: str) -> float:
    if objective == "accuracy":
        return float(metrics.val_action_acc)
    return float(sum(m.f1 for m in metrics.per_class.values()) / len(metrics.per_class))


@dataclass
class _Objective:
    """One trial: the base config with the trial's knobs, trained in a temporary folder."""

    config: TrainingConfig
    space: SearchSpace
    objective: str
    out: TextIO | None
    ran: list[int] = field(default_factory=list)

    def __call__(self, trial: optuna.Trial) -> float:
        from otonom_trainer.train import BehaviorCloningTrainer, TrainingError

        params = self.space.suggest(trial)
        self.ran.append(trial.number)
        start = time.perf_counter()
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        with tempfile.TemporaryDirectory(prefix="otonom-tune-") as tmp:
            cfg = self.config.replace(**params, output_dir=tmp, progress=False, tensorboard=False)
            try:
                metrics = BehaviorCloningTrainer(cfg, out=io.StringIO()).train(export=False)
            except TrainingError as exc:
                trial.set_user_attr("error", " ".join(str(exc).split()))
                trial.set_user_attr("seconds", round(time.perf_counter() - start, 2))
                line = " ".join(str(exc).split())
                print(f"trial {trial.number}: failed ({line})", file=self.out, flush=True)
                raise
        value = _value(metrics, self.objective)
        seconds = round(time.perf_counter() - start, 2)
        for name, v in (
            ("val_acc", metrics.val_action_acc),
            ("macro_f1", _value(metrics, "macro-f1")),
            ("best_val_loss", metrics.best_val_loss),
            ("best_epoch", metrics.best_epoch),
            ("epochs_run", metrics.epochs_run),
            ("seconds", seconds),
        ):
            trial.set_user_attr(name, v)
        knobs = " ".join(f"{k}={fmt_value(v)}" for k, v in params.items())
        print(
            f"trial {trial.number}: {self.objective} {value:.4f} ({knobs}; "
            f"{metrics.epochs_run} epochs, {seconds:.1f} s)",
            file=self.out,
            flush=True,
        )
        return value


def tune(
    config: TrainingConfig,
    *,
    space: SearchSpace | None = None,
    n_trials: int | None = 20,
    timeout: float | None = None,
    storage: str | os.PathLike[str] | None = None,
    study_name: str = DEFAULT_STUDY,
    objective: str = "accuracy",
    seed: int | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    out: TextIO | None = None,
) -> TuneResult:
    """Run ``n_trials`` trials (or until ``timeout`` s) of the study ``study_name`` in
    ``storage`` (``"journal:PATH"``, a database URL; default ``journal:OUT_DIR/study.journal``
    with ``out_dir``, else in memory) over ``space`` (default ``SearchSpace.for_rows`` of the
    dataset), from ``config`` (its ``dataset_path``, seed and every knob not tuned). ``seed``:
    the sampler's (default ``config.seed``). With ``out_dir``, writes ``best_config.yaml`` and
    ``trials.csv`` there; prints one line per trial and the summary to ``out`` (default
    stdout). ``TuneError`` for bad options, a study made for something else, or no completed
    trial (then nothing is written)."""
    if storage is None and out_dir is not None:
        storage = JOURNAL_PREFIX + str(Path(out_dir) / JOURNAL_NAME)
    opts = TuneOptions(
        n_trials, timeout, None if storage is None else os.fspath(storage), study_name,
        objective, seed, None if out_dir is None else os.fspath(out_dir),
    )  # fmt: skip
    from otonom_trainer._errors import TrainingError

    study, runner, storage = _start(config, space, opts, out)
    try:
        study.optimize(runner, n_trials=opts.n_trials, timeout=opts.timeout, catch=(TrainingError,))
        result = _result(study, config, opts, len(runner.ran))
    finally:
        engine = getattr(storage, "engine", None)  # an RDB storage's connections
        if engine is not None:
            engine.dispose()
    if opts.out_dir is not None:
        result = write_results(result, Path(opts.out_dir))
    print(summary(result), file=out, flush=True)
    return result


def _start(
    config: TrainingConfig, space: SearchSpace | None, opts: TuneOptions, out: TextIO | None
) -> tuple[optuna.Study, _Objective, Any]:
    """Check everything, then open (or join) the study and enqueue trial 0 in a new one."""
    from otonom_schema import load_dataset, sha256_file

    if config.split != "time":
        raise TuneError(
            f"split: got {config.split!r}; tune expected 'time' (validation = the latest "
            "dates, as the model will be used)"
        )
    optuna = _optuna()
    n_rows = len(load_dataset(config.dataset_path))
    space = space if space is not None else SearchSpace.for_rows(n_rows)
    space.check_against(config)
    key = _study_key(config, space, sha256_file(config.dataset_path), opts.objective)
    from otonom_trainer.training.distributed import DataParallel  # torch: after the file checks

    if DataParallel.from_env().active:
        raise TuneError("tune runs one process per worker: start each worker without torchrun")
    storage = open_storage(opts.storage)
    sampler = optuna.samplers.TPESampler(seed=config.seed if opts.seed is None else opts.seed)
    name, first = opts.study_name, space.first_params(config, n_rows)
    try:  # the worker that creates the study (one: creation is atomic) enqueues trial 0
        study = optuna.create_study(
            storage=storage, study_name=name, direction="maximize", sampler=sampler
        )
        study.enqueue_trial(first)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
        if study.direction != optuna.study.StudyDirection.MAXIMIZE:
            raise TuneError(f"study {name!r} minimises; expected a study made by tune") from None
    _check_study(study, key)
    print(
        f"Study {name!r} ({opts.storage or 'in memory'}): {len(study.trials)} trial(s) so far; "
        f"dataset {n_rows} rows, {size_row(n_rows).name}: trial 0 = {first}",
        file=out,
        flush=True,
    )
    return study, _Objective(config, space, opts.objective, out), storage


def _row(t: optuna.trial.FrozenTrial) -> TrialRow:
    value = t.value if t.state.name == "COMPLETE" else None
    return TrialRow(t.number, t.state.name, value, dict(t.params), dict(t.user_attrs))


def _result(study: optuna.Study, config: TrainingConfig, opts: TuneOptions, ran: int) -> TuneResult:
    trials = tuple(_row(t) for t in study.get_trials(deepcopy=False))
    done = [t for t in trials if t.value is not None and math.isfinite(t.value)]
    if not done:
        errors = [t.attrs["error"] for t in trials if "error" in t.attrs]
        why = f"; first error: {errors[0]}" if errors else ""
        raise TuneError(
            f"no trial of study {opts.study_name!r} completed ({len(trials)} trial(s)){why}"
        )
    best = max(done, key=lambda t: (t.value, -t.number))
    return TuneResult(
        study_name=opts.study_name,
        objective=opts.objective,
        best=best,
        best_config=config.replace(**best.params),
        trials=trials,
        n_tried=sum(t.state in ("COMPLETE", "FAIL", "PRUNED") for t in trials),
        n_this_worker=ran,
    )


# --- outputs -------------------------------------------------------------------------------


# --- the command line ----------------------------------------------------------------------


def _cmd_tune(args: argparse.Namespace) -> int:
    _optuna().logging.set_verbosity(_optuna().logging.WARNING)  # a line per trial of our own
    overrides = {"dataset_path": args.dataset} if args.dataset else {}
    if args.config:
        config = TrainingConfig.from_yaml(args.config, overrides=overrides)
    elif args.dataset:
        config = TrainingConfig.from_dict(overrides)
    else:
        raise TuneError("no dataset: give --dataset FILE.npz (or dataset_path in --config)")
    out_dir = args.out or str(Path("reports") / "tune" / args.study_name)
    space = None
    if args.space:
        from otonom_schema import load_dataset

        base = SearchSpace.for_rows(len(load_dataset(config.dataset_path)))
        space = SearchSpace.from_yaml(args.space, base)
    tune(
        config,
        space=space,
        n_trials=args.trials,
        timeout=args.timeout,
        storage=args.storage,
        study_name=args.study_name,
        objective=args.objective,
        seed=args.seed,
        out_dir=out_dir,
    )
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add the ``tune`` command to ``sub``; its handler runs ``tune``."""
    sizes = "; ".join(f"{r.name}: batch {r.batch_size}, width {r.hidden_dim}" for r in SIZE_TABLE)
    p = sub.add_parser(
        "tune",
        help="hyperparameter search (optuna): the guide's knobs, from its size-based defaults",
        description=(
            "Search the guide's hyperparameters (learning rate, hidden width and layers, "
            "dropout, batch size, weight decay, epochs, patience, class balance, optimizer) "
            "with optuna's TPE sampler, starting from the guide's size-based defaults as "
            f"trial 0 ({sizes}; the base configuration's other values). Each trial trains on "
            "the time split (validation = the latest dates) and is scored by validation "
            "accuracy or macro-F1. Trials share a storage, so several workers (processes or "
            "machines) can tune one study: run the same command in each, with its own --seed. "
            "Prints a line per trial, a table and the best configuration, the number of "
            "configurations tried, and writes OUT/best_config.yaml (for `otonom-train train "
            "--config`) and OUT/trials.csv. Needs the tune extra (optuna)."
        ),
        epilog=(
            "example: otonom-train tune --dataset data/offline_dataset.npz --trials 30; "
            "another machine: otonom-train tune --dataset ... --storage "
            "postgresql+psycopg://user@host/otonom --seed 2"
        ),
    )
    p.add_argument("--dataset", help="the offline dataset (.npz); overrides --config's")
    p.add_argument(
        "--config",
        help="base TrainingConfig YAML (as for train): the seed and every knob not tuned",
    )
    p.add_argument(
        "--space",
        metavar="FILE",
        help="YAML changing the searched ranges: knob: [low, high] (lr, weight_decay, dropout, "
        "num_layers, max_epochs, patience), knob: [choices] (hidden_dim, batch_size, "
        "class_balance, optimizer), knob: null (not tuned)",
    )
    p.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default="accuracy",
        help="what a trial maximises on the validation rows (default %(default)s)",
    )
    p.add_argument(
        "--trials", type=int, default=20, help="trials this worker runs (default %(default)s)"
    )
    p.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="start no new trial after this many seconds (default: none)",
    )
    p.add_argument(
        "--storage",
        metavar="SPEC",
        help="where the study's trials live: journal:PATH (a JournalStorage file; default "
        f"journal:OUT/{JOURNAL_NAME}) or a database URL (postgresql+psycopg://user@host/db) "
        "shared by workers on several machines",
    )
    p.add_argument(
        "--study-name", default=DEFAULT_STUDY, help="the study's name (default %(default)s)"
    )
    p.add_argument(
        "--seed",
        type=int,
        help="the sampler's seed (default: the training seed); give each worker its own",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        help="folder for best_config.yaml, trials.csv and the default journal (default "
        "reports/tune/STUDY_NAME)",
    )
    p.set_defaults(handler=_cmd_tune)
    return p
