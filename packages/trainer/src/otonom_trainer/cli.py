"""The ``otonom-train`` command line (also ``python -m otonom_trainer``).

Commands: ``dataset`` (guide Step 1), ``train`` (Step 2: train, then export to ONNX with a parity
check; ``--seeds``: N at once; data-parallel under ``torchrun``), ``export`` (a checkpoint to
ONNX), ``evaluate`` (Step 3, through the runtime's ONNX model), ``pipeline`` (the whole guide end
to end), ``check`` (the production checklist; ``--promote`` moves a model folder's ``latest``
pointer), ``walk-forward``, ``explain`` (feature importance), ``ensemble`` (policies as one ONNX
model), ``tune`` (optuna), ``finetune`` (PPO from a clone) and ``retrain`` (is the model in
service due? then pipeline + gate), whose parsers are their modules' ``add_parser``
(``_PARSERS``). Every error prints one ``error: ...`` line and exits 1 (``--debug``: the
traceback; ``retrain`` exits 2 on bad input); the handling is ``otonom``'s
(``otonom_runtime.cli.run_cli``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import otonom_schema
from otonom_runtime._demo import DEMO_SEED
from otonom_runtime.cli import add_global_flags, require_store, run_cli
from otonom_schema import parse_iso_date

__all__ = ["main"]
_PARSERS = (
    "check_cli",
    "walkforward",
    "compare",
    "explain_report",
    "ensemble_cli",
    "stacked_cli",
    "tune",
    "rl.finetune",
    "retrain_cli",
)

# --- dataset -------------------------------------------------------------------------------------


def _cmd_dataset(args: argparse.Namespace) -> int:
    from otonom_runtime.store import get_session
    from otonom_trainer.dataset import OfflineDatasetGenerator, save_dataset

    url = require_store(args.database_url)
    with get_session(url) as session:
        symbols = list(dict.fromkeys(args.symbol))
        ds = OfflineDatasetGenerator(session).generate_dataset(
            symbols if len(symbols) > 1 else symbols[0],
            args.start_date,
            args.end_date,
            run_id=args.run_id,
            allow_rl_run=args.allow_rl_run,
            horizon=args.horizon,
        )
        if args.rewards:
            from otonom_trainer.rewards import with_rewards

            ds = with_rewards(session, ds)
    print(f"Generated {len(ds)} training samples")
    save_dataset(ds, args.output)
    return 0


def _add_dataset(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "dataset",
        help="offline dataset (state, action, strength) from stored backtest decisions",
        description=(
            "Build the offline dataset from the decisions of a teacher backtest: per symbol the "
            "newest complete run with the RL analyst off, not internal (not made by `otonom-train "
            "check` or to judge a model) and covering the dates, or --run-id. Every row's state "
            "is exactly what the live state builder gives for that symbol, date and the "
            "backtest's portfolio. Prints the teacher run(s) used, writes the schema's .npz "
            "format and prints the action distribution."
        ),
    )
    p.add_argument("--symbol", action="append", required=True, help="a symbol (repeatable)")
    for flags, which in ((("--start-date", "--start"), "first"), (("--end-date", "--end"), "last")):
        p.add_argument(*flags, type=parse_iso_date, required=True, help=f"{which} date, YYYY-MM-DD")
    p.add_argument("--output", default="data/offline_dataset.npz", help="the .npz file to write")
    p.add_argument(
        "--run-id", type=int, help="take this complete run as the teacher instead of the default"
    )
    p.add_argument(
        "--allow-rl-run",
        action="store_true",
        help="accept a --run-id made with the RL analyst on (a policy trained on its own votes "
        "learns nothing; refused without this flag)",
    )
    p.add_argument(
        "--horizon",
        type=int,
        metavar="BARS",
        help="also label each row with what followed it over BARS bars up to --end-date (the "
        "forward log return and realised-volatility tercile: targets of --model multitask)",
    )
    p.add_argument(
        "--rewards",
        action="store_true",
        help="also record each row's reward: the teacher run's sleeve return from the decision "
        "to the next one, after costs (dataset format 3; what `otonom-train train --awr-beta` "
        "weights by)",
    )
    p.add_argument(
        "--database-url", help="SQLAlchemy URL (default: $OTONOM_DATABASE_URL or ./data/otonom.db)"
    )
    p.set_defaults(handler=_cmd_dataset)


# --- train ---------------------------------------------------------------------------------------


def _add_train(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from otonom_trainer.config import config_fields

    p = sub.add_parser(
        "train",
        help="behaviour cloning: train a policy network on a dataset, then export it to ONNX",
        description=(
            "Train the guide's PolicyNet or another --model (alpha * cross-entropy + beta * "
            "MSE on BUY/SELL strengths, plus the extra heads' losses) with early stopping, then "
            "export the best weights to ONNX, checked against torch through the runtime. Flags "
            "override --config FILE.yaml; unset flags keep the file's values or the defaults shown."
        ),
    )
    p.add_argument("--config", help="YAML file with TrainingConfig fields")
    for f in config_fields():
        kwargs: dict[str, Any] = {"dest": f.name, "help": f.help, "default": argparse.SUPPRESS}
        if f.kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = f.kind
            if f.choices:
                kwargs["choices"] = f.choices
        if f.default is not None:
            kwargs["help"] = f"{f.help} (default: {f.default})"
        p.add_argument(f.flag, *f.aliases, **kwargs)
    p.add_argument(
        "--no-export",
        action="store_true",
        help="stop after training (no ONNX model; an older one in the folder is then refused "
        "as stale until `otonom-train export` writes this run's)",
    )
    p.add_argument(
        "--state-file",
        metavar="FILE",
        help="write the whole training state (weights, optimizer, scheduler, random states) to "
        "FILE after every epoch, for --resume",
    )
    p.add_argument(
        "--resume",
        metavar="FILE",
        help="continue the run saved in FILE (a --state-file, or a policy_best.pt) up to "
        "--epochs, with the same dataset and configuration",
    )
    p.set_defaults(handler=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from otonom_trainer.config import TrainingConfig, config_fields
    from otonom_trainer.training.files import checkpoint_file, dataset_file

    flags = {f.name: getattr(args, f.name) for f in config_fields() if hasattr(args, f.name)}
    if args.config:  # flags override the file's values, --dataset and --output included
        cfg = TrainingConfig.from_yaml(args.config, overrides=flags)
    elif "dataset_path" in flags:
        cfg = TrainingConfig.from_dict(flags)
    else:
        print(
            "error: no dataset: give --dataset FILE.npz (or dataset_path in --config)",
            file=sys.stderr,
        )
        return 2
    given = "--dataset" if "dataset_path" in flags else f"dataset_path in {args.config}"
    dataset_file(cfg.dataset_path, given)  # before torch's import: a missing file says so at once
    if args.resume:
        checkpoint_file(args.resume)

    from otonom_trainer.train import BehaviorCloningTrainer

    trainer = BehaviorCloningTrainer(cfg, state_path=args.state_file)
    trainer.train(export=not args.no_export, resume_from=args.resume)
    return 0


# --- export / evaluate ---------------------------------------------------------------------------


def _cmd_export(args: argparse.Namespace) -> int:
    from otonom_trainer.training.files import checkpoint_file, dataset_file

    checkpoint_file(args.checkpoint)  # both before torch's import: a missing file says so at once
    if args.dataset:
        dataset_file(args.dataset, "--dataset")

    from otonom_trainer.export import export_onnx, sha256_file
    from otonom_trainer.train import load_checkpoint

    model, ckpt = load_checkpoint(args.checkpoint)
    dataset = args.dataset or ckpt["config"]["dataset_path"]
    out = Path(args.output) if args.output else Path(args.checkpoint).with_suffix(".onnx")
    path = export_onnx(
        model,
        out,
        metrics=ckpt["metrics"],
        training_config=ckpt["config"],
        dataset_sha256=sha256_file(dataset),
        training_run_id=ckpt.get("run_id"),
        training_rows=_training_rows(ckpt["config"], dataset),
    )
    print(f"ONNX model: {path} (matches torch at batch 1, 7 and 256)")
    return 0


def _training_rows(config: dict[str, Any], dataset: str) -> tuple[Any, Any] | None:
    """The checkpoint's training rows (its config's split of ``dataset``) for the export's
    ``otonom.training_summary``; None (no summary, said on stderr) when the checkpoint's config
    no longer reads as a ``TrainingConfig``."""
    from otonom_trainer.config import ConfigError, TrainingConfig
    from otonom_trainer.train import BehaviorCloningTrainer

    try:
        cfg = TrainingConfig.from_dict(config, {"dataset_path": str(dataset)})
    except ConfigError as exc:
        print(f"(no otonom.training_summary: {exc})", file=sys.stderr)
        return None
    trainer = BehaviorCloningTrainer(cfg)
    rows = trainer.split.train
    return trainer.dataset.states[rows], trainer.dataset.actions[rows]


def _add_export(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "export",
        help="export a policy_best.pt checkpoint to ONNX (with the parity check)",
        description=(
            "Export a checkpoint to the runtime's ONNX format (docs/model-format.md) with its "
            "metadata and sha256 sidecar; fails unless the ONNX model matches torch."
        ),
    )
    p.add_argument("--checkpoint", required=True, help="policy_best.pt from otonom-train train")
    p.add_argument("--output", help="the .onnx file (default: beside the checkpoint)")
    p.add_argument(
        "--dataset",
        help="the training dataset, for its sha256 (default: from the checkpoint's config)",
    )
    p.set_defaults(handler=_cmd_export)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from otonom_trainer.evaluate import evaluate, plot_confusion_matrix

    report = evaluate(args.model, args.dataset, device=args.device)
    print(report.format())
    if args.confusion_png:
        print(f"confusion matrix: {plot_confusion_matrix(report.confusion, args.confusion_png)}")
    return 0


def _add_evaluate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "evaluate",
        help="accuracy, classification report and confusion matrix of an ONNX model",
        description=(
            "Evaluate a model through the runtime (ONNX Runtime, as served) on a dataset: "
            "accuracy, per-class precision/recall/F1 for HOLD/BUY/SELL and the confusion matrix."
        ),
    )
    p.add_argument("--model", required=True, help="a .onnx file, a model folder or policy_best.pt")
    p.add_argument("--dataset", required=True, help="a .npz dataset")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")
    p.add_argument("--confusion-png", help="also write the confusion matrix as a PNG")
    p.set_defaults(handler=_cmd_evaluate)


# --- pipeline ------------------------------------------------------------------------------------


def _cmd_pipeline(args: argparse.Namespace) -> int:
    from otonom_trainer.config import DEMO_SYMBOLS
    from otonom_trainer.pipeline import PipelineConfig, run_pipeline

    symbols = tuple(dict.fromkeys(args.symbol or DEMO_SYMBOLS))
    files = args.import_csv or []
    if len(files) > len(symbols):
        print(
            f"error: {len(files)} --import-csv files but {len(symbols)} --symbol names; "
            "expected one --symbol per file (the i-th file is stored as the i-th symbol)",
            file=sys.stderr,
        )
        return 2
    cfg = PipelineConfig(
        strategy_path=args.strategy_path,
        database_url=args.database_url,
        symbols=symbols,
        start=args.start,
        end=args.end,
        train_end=args.train_end,
        test_start=args.test_start,
        import_csv=tuple(zip(files, symbols[: len(files)], strict=True)),
        replace=args.replace,
        drop_bad_rows=args.drop_bad_rows,
        date_format=args.date_format,
        seed=args.seed,
        epochs=args.epochs,
        teacher_rows=args.teacher_rows,
        teacher_noise=args.teacher_noise,
        model_dir=args.model_dir,
        report_dir=args.report_dir,
        run_name=args.run_name,
        from_stage=args.from_stage,
        promote=not args.no_promote,
        quiet=args.quiet,
    )
    result = run_pipeline(cfg)
    gate = result.gate or {}
    if gate.get("passed"):
        return 0
    print(
        f"the production gate rejected {result.model_dir} (failed: "
        f"{', '.join(gate.get('failed') or ['?'])}); it was not promoted (exit 1)",
        file=sys.stderr,
    )
    return 1


def _add_pipeline(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``pipeline`` command's parser. Long because it is one declaration: the command's
    description and one ``add_argument`` per flag in ``--help`` order; split, the flags of one
    command would be read in several places."""
    from otonom_trainer.flags import add_strategy_flag, add_symbol_flag, add_teacher_flags
    from otonom_trainer.pipeline import PIPELINE_EPOCHS, STAGES

    p = sub.add_parser(
        "pipeline",
        help="the whole guide end to end, with and without the RL analyst side by side",
        description=(
            "Run the guide end to end: create the store and the synthetic market if missing "
            "(or import CSVs), backtest the baseline ensemble, build the train and held-out "
            "datasets, train and export the policy, evaluate it, then backtest the held-out "
            "period with and without the RL analyst and print a side-by-side table, and run the "
            "production checklist ('otonom-train check'), promoting the new model version "
            "(MODEL_DIR/latest) when it passes. Each run writes its own report folder "
            "REPORT_DIR/RUN_NAME/ (table.md, table.json, equity.png, confusion_matrix.png, "
            "pipeline_state.json); REPORT_DIR/latest names the last run. Exit status: 0 when "
            "the production gate passes (the model is promoted, unless --no-promote), 1 when "
            "it rejects the model or a stage fails. Stages: "
            + ", ".join(f"{i} {name}" for i, name in enumerate(STAGES, start=1))
            + "."
        ),
    )
    add_strategy_flag(p)
    add_symbol_flag(p)
    p.add_argument(
        "--import-csv",
        action="append",
        metavar="FILE",
        help="import this daily OHLCV CSV first, as the matching --symbol (repeatable)",
    )
    p.add_argument(
        "--replace",
        action="store_true",
        help="let --import-csv overwrite stored bars that differ from the file's (default: "
        "refuse, listing the changed dates)",
    )
    p.add_argument(
        "--drop-bad-rows",
        action="store_true",
        help="let --import-csv skip bad rows (bad date or number, OHLC rule broken, ...) and "
        "report them, instead of refusing the file (default: refuse, listing every bad row)",
    )
    p.add_argument(
        "--date-format",
        metavar="FORMAT",
        help="strptime format of the --import-csv files' date column, e.g. '%%m/%%d/%%Y' "
        "(default: read from the file, as `otonom data import-csv` does)",
    )
    p.add_argument(
        "--start-date",
        "--start",
        dest="start",
        type=parse_iso_date,
        help="first bar used, warm-up included (default: the symbols' first common bar; "
        "missing DEMO-* symbols are generated from 2018-01-01)",
    )
    p.add_argument(
        "--end-date",
        "--end",
        dest="end",
        type=parse_iso_date,
        help="last decision day (default: the symbols' last common bar; DEMO-*: 2023-12-31)",
    )
    p.add_argument(
        "--train-end",
        type=parse_iso_date,
        help="last training day (default: before the last 25 %% of the decision days)",
    )
    p.add_argument(
        "--test-start", type=parse_iso_date, help="first held-out day (default: train end + 1)"
    )
    p.add_argument(
        "--epochs", type=int, default=PIPELINE_EPOCHS, help="training epochs (default %(default)s)"
    )
    add_teacher_flags(p, "the training split")
    p.add_argument(
        "--seed",
        type=int,
        default=DEMO_SEED,
        help="seed: synthetic market, training (default %(default)s)",
    )
    p.add_argument(
        "--model-dir",
        default="models/rl_bc",
        help="models land in MODEL_DIR/<UTC timestamp>/ (default %(default)s)",
    )
    p.add_argument(
        "--report-dir",
        default="reports/pipeline",
        help="each run's report goes to REPORT_DIR/RUN_NAME/ (default %(default)s)",
    )
    p.add_argument(
        "--run-name",
        help="name this run's report folder (letters, digits, '.', '_', '-'; default: the UTC "
        "time it starts, which also names the model version it trains); with --from-stage: "
        "the run to resume (default: REPORT_DIR/latest)",
    )
    p.add_argument(
        "--database-url", help="SQLAlchemy URL (default: $OTONOM_DATABASE_URL or ./data/otonom.db)"
    )
    p.add_argument(
        "--from-stage",
        type=int,
        default=1,
        choices=range(1, len(STAGES) + 1),
        metavar="N",
        help="resume the latest run (or --run-name's): skip stages before N, reusing what it "
        "recorded in its pipeline_state.json; the options must be the same (1-7; default 1)",
    )
    p.add_argument(
        "--no-promote",
        action="store_true",
        help="do not move MODEL_DIR/latest to the new model even if every check passes",
    )
    p.add_argument("--quiet", action="store_true", help="print only errors")
    p.set_defaults(handler=_cmd_pipeline)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="otonom-train",
        description=(
            "Train a behaviour-cloning policy that imitates the otonom ensemble, export it to "
            "ONNX and evaluate it."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_dataset(sub)
    _add_train(sub)
    _add_export(sub)
    _add_evaluate(sub)
    _add_pipeline(sub)
    for module in _PARSERS:
        importlib.import_module(f"otonom_trainer.{module}").add_parser(sub)  # its parser
    add_global_flags(parser, version=_version_text())
    return parser


def _version_text() -> str:
    import otonom_runtime
    import otonom_trainer

    return (
        f"otonom-train {otonom_trainer.__version__} (otonom-trainer {otonom_trainer.__version__}, "
        f"otonom-runtime {otonom_runtime.__version__}, otonom-schema {otonom_schema.__version__}, "
        f"state schema {otonom_schema.SCHEMA_VERSION}, fingerprint "
        f"{otonom_schema.schema_fingerprint()})"
    )


def _expected_errors() -> tuple[type[BaseException], ...]:
    """The error trees whose members are raised on purpose (bad input, a missing file, a failed
    stage): the message is shown, not a traceback."""
    from otonom_runtime._errors import OtonomRuntimeError
    from otonom_schema import SchemaError
    from otonom_trainer._errors import OtonomTrainerError

    return (OSError, SchemaError, OtonomRuntimeError, OtonomTrainerError)


def _expected(exc: BaseException) -> str | None:
    """The message of an error the project raises on purpose (a member of one of the packages'
    error trees, or an ``OSError``), None for anything else (a bug)."""
    if isinstance(exc, _expected_errors()):
        if isinstance(exc, KeyError) and type(exc).__str__ is KeyError.__str__ and exc.args:
            return str(exc.args[0])
        return str(exc)
    if "sqlalchemy" in sys.modules:
        from sqlalchemy.exc import SQLAlchemyError

        if isinstance(exc, SQLAlchemyError):
            return f"database error: {exc}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    return run_cli(_build_parser(), argv, expected=_expected)


if __name__ == "__main__":
    sys.exit(main())
