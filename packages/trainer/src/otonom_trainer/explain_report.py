"""``otonom-train explain``: a policy's feature importance as a sorted table, Markdown, JSON
and a bar chart (``otonom_trainer.explain`` measures it; see there for the definition).

``run_explain(ExplainConfig(model=..., dataset=...))`` measures, then writes ``table.md``,
``table.json`` and ``importance.png`` into ``out_dir`` (default ``reports/explain/<the model's
folder name>/``). Everything is rendered in memory first and each file then renamed into place
(``otonom_schema.atomic_write``): a run that fails (a missing file, a dataset of another state
schema, an option out of range, no matplotlib) writes nothing. ``add_parser`` adds the command
to ``otonom-train``'s parser (``cli.py`` calls it).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import numpy as np

from otonom_runtime.cli._text import table
from otonom_runtime.config_rules import Validated, rule
from otonom_runtime.policy import DEVICES
from otonom_schema import atomic_write
from otonom_trainer.config import POSITIVE_INT
from otonom_trainer.explain import (
    ATTENTION_OUTPUT,
    COLUMNS,
    METRICS,
    SEED_RULE,
    ExplainError,
    FeatureImportance,
    UnitImportance,
    permutation_importance,
)
from otonom_trainer.metrics import CLASS_NAMES

__all__ = [
    "EXPLAIN_REPORTS",
    "ExplainConfig",
    "ExplainRun",
    "add_parser",
    "format_table",
    "markdown",
    "run_explain",
    "write_report",
]

EXPLAIN_REPORTS: Final = Path("reports/explain")
"""Where the files go by default: ``reports/explain/<the model's folder name>/``."""
FILES: Final = ("table.md", "table.json", "importance.png")

_WHAT: Final = {
    "accuracy": (
        "the drop in accuracy (overall) and in each action's recall (HOLD, BUY, SELL: the share "
        "of the rows labelled so that are predicted so)",
        "accuracy / recall drop",
    ),
    "probability": (
        "the drop in the mean probability of the dataset's action, overall and over each "
        "action's rows",
        "p(true action) drop",
    ),
}


@dataclass(frozen=True)
class ExplainConfig(Validated):
    """What ``otonom-train explain`` runs; validated once (``otonom_runtime.config_rules``:
    ``ExplainError`` names the field, what was given and what was expected). ``top`` None: every
    row in the printed table and the chart (``table.md`` / ``table.json`` always hold every
    row); ``out_dir`` None: ``EXPLAIN_REPORTS`` / the model's folder name."""

    model: str = field(metadata=rule(nonempty=True, path=True, described="a model path"))
    dataset: str = field(metadata=rule(nonempty=True, path=True, described="a .npz path"))
    repeats: int = field(default=5, metadata=POSITIVE_INT)
    seed: int = field(default=0, metadata=SEED_RULE)
    device: str = field(default="cpu", metadata=rule(choices=DEVICES))
    metric: str = field(default="accuracy", metadata=rule(choices=METRICS))
    top: int | None = field(default=None, metadata=POSITIVE_INT)
    out_dir: str | None = field(default=None, metadata=rule(nonempty=True, path=True))

    _error_class = ExplainError


@dataclass(frozen=True)
class ExplainRun:
    """A finished ``run_explain``: the measure, and the files written (in ``FILES`` order)."""

    result: FeatureImportance
    files: tuple[Path, ...]


def run_explain(cfg: ExplainConfig) -> ExplainRun:
    """Measure ``cfg.model`` on ``cfg.dataset`` (``permutation_importance``) and write the
    report (``write_report``)."""
    result = permutation_importance(
        cfg.model, cfg.dataset, repeats=cfg.repeats, seed=cfg.seed, device=cfg.device
    )
    out = Path(cfg.out_dir) if cfg.out_dir else EXPLAIN_REPORTS / _folder_name(result)
    return ExplainRun(result, write_report(result, out, metric=cfg.metric, top=cfg.top))


def _folder_name(result: FeatureImportance) -> str:
    return result.model_path.resolve().parent.name or result.model_path.stem


# --- text ----------------------------------------------------------------------------------------


def _cell(mean: float, std: float) -> str:
    return "n/a" if math.isnan(mean) else f"{mean:.4f} ± {std:.4f}"


def _number(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4f}"


def _rows(units: Sequence[UnitImportance], metric: str) -> list[list[str]]:
    return [
        [str(rank), u.name, *map(_cell, u.mean(metric), u.std(metric))]
        for rank, u in enumerate(units, start=1)
    ]


def _attention_rows(result: FeatureImportance, top: int | None) -> list[list[str]]:
    ranked = result.attention.ranked() if result.attention is not None else ()
    return [
        [str(rank), name, *map(_number, weights)]
        for rank, (name, weights) in enumerate(ranked[:top], start=1)
    ]


def _head(result: FeatureImportance, metric: str) -> list[str]:
    counts = ", ".join(f"{n} {c}" for n, c in zip(CLASS_NAMES, result.support, strict=True))
    base = ", ".join(
        f"{k} {_number(v)}" for k, v in zip(COLUMNS, result.baseline(metric), strict=True)
    )
    data = result.dataset_path if result.dataset_path is not None else "(a dataset)"
    return [
        f"Permutation importance of {result.model_path} on {data} ({result.rows} rows: "
        f"{counts}; {result.repeats} repeats, seed {result.seed})",
        f"Metric: {metric}: {_WHAT[metric][0]} when a feature is shuffled across the rows; "
        "mean ± std over the repeats, highest overall first",
        f"Baseline (nothing shuffled): {base}",
    ]


_NO_ATTENTION: Final = f"Attention: none (the model has no {ATTENTION_OUTPUT!r} output)"
_ATTENTION: Final = (
    "Attention: the mean weight of the model's 'attention' output per feature, overall and "
    "over the rows of each dataset action"
)
_GROUPS: Final = "Groups (each group's features shuffled together):"


def format_table(
    result: FeatureImportance, *, metric: str = "accuracy", top: int | None = None
) -> str:
    """The console report: the header, the units ranked (the first ``top``), the groups, the
    attention (or a line saying there is none)."""
    right = {0, 2, 3, 4, 5}
    lines = [*_head(result, metric), ""]
    lines.append(
        table(["rank", "feature", *COLUMNS], _rows(result.ranked(metric)[:top], metric), right)
    )
    if result.groups:
        rows = _rows(result.ranked(metric, groups=True), metric)
        lines += ["", _GROUPS, table(["rank", "group", *COLUMNS], rows, right)]
    if result.attention is None:
        lines += ["", _NO_ATTENTION]
    else:
        rows = _attention_rows(result, top)
        lines += ["", _ATTENTION + ":", table(["rank", "feature", *COLUMNS], rows, right)]
    return "\n".join(lines) + "\n"


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|---" * len(headers) + "|"]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def markdown(result: FeatureImportance, *, metric: str = "accuracy") -> str:
    """``table.md``: the same report with every row, as Markdown."""
    head = _head(result, metric)
    lines = ["# Feature importance", "", *(f"{line}  " for line in head), ""]
    lines += _md_table(["rank", "feature", *COLUMNS], _rows(result.ranked(metric), metric))
    if result.groups:
        rows = _rows(result.ranked(metric, groups=True), metric)
        lines += [
            "",
            "## " + _GROUPS.rstrip(":"),
            "",
            *_md_table(["rank", "group", *COLUMNS], rows),
        ]
    if result.attention is None:
        lines += ["", _NO_ATTENTION + "."]
    else:
        rows = _attention_rows(result, None)
        lines += ["", "## " + _ATTENTION, "", *_md_table(["rank", "feature", *COLUMNS], rows)]
    return "\n".join(lines) + "\n"


# --- files ---------------------------------------------------------------------------------------


def write_report(
    result: FeatureImportance,
    out_dir: str | Path,
    *,
    metric: str = "accuracy",
    top: int | None = None,
) -> tuple[Path, ...]:
    """Render ``table.md``, ``table.json`` and ``importance.png`` (the first ``top`` units,
    one panel per ``COLUMNS`` entry) in memory, then write them into ``out_dir`` (created),
    each atomically; returns their paths. Nothing is written when rendering fails."""
    from otonom_trainer.plots import plot_feature_importance

    units = result.ranked(metric)[:top]
    png = plot_feature_importance(
        [u.name for u in units],
        np.array([u.mean(metric) for u in units]),
        np.array([u.std(metric) for u in units]),
        panels=COLUMNS,
        xlabel=_WHAT[metric][1],
        title=f"Permutation importance ({metric}; {result.repeats} repeats, {result.rows} rows)",
    )
    text = json.dumps({"metric": metric, **result.to_dict()}, indent=2, allow_nan=False)
    contents: tuple[str | bytes, ...] = (markdown(result, metric=metric), text + "\n", png)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return tuple(atomic_write(out / name, data) for name, data in zip(FILES, contents, strict=True))


# --- command line --------------------------------------------------------------------------------


def _cmd_explain(args: argparse.Namespace) -> int:
    cfg = ExplainConfig(
        model=args.model,
        dataset=args.dataset,
        repeats=args.repeats,
        seed=args.seed,
        device=args.device,
        metric=args.metric,
        top=args.top,
        out_dir=args.out,
    )
    run = run_explain(cfg)
    print(format_table(run.result, metric=cfg.metric, top=cfg.top), end="")
    print(f"\nwrote {', '.join(str(p) for p in run.files)}")
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add the ``explain`` command to ``sub``; its handler runs ``run_explain``."""
    p = sub.add_parser(
        "explain",
        help="feature importance of an ONNX model: permutation importance per action, a table "
        "and a bar chart",
        description=(
            "Permutation importance of every feature of a model's state, measured through the "
            "runtime (ONNX Runtime, as served: any exported architecture): each feature "
            "(the regime one-hot's three columns together) is shuffled across the dataset's "
            "rows and the drop in accuracy (overall) and in each action's recall (HOLD, BUY, "
            "SELL) is measured, mean ± std over --repeats shuffles; the same for each feature "
            "group. A model with an extra 'attention' output [batch, 34] (what `otonom-train "
            "train --model attention` exports) gets its mean weight per feature and action "
            "beside. Prints the sorted table and writes table.md, table.json and importance.png "
            "(one panel per action plus overall) to --out; nothing is written when it fails. "
            "Definitions: otonom_trainer.explain."
        ),
        epilog="example: otonom-train explain --model models/rl_bc --dataset data/test.npz",
    )
    p.add_argument("--model", required=True, help="a .onnx file, a model folder or policy_best.pt")
    p.add_argument("--dataset", required=True, help="a .npz dataset (the labels scored against)")
    p.add_argument(
        "--repeats", type=int, default=5, help="shuffles per feature, >= 1 (default %(default)s)"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the shuffles, >= 0 (default %(default)s)"
    )
    p.add_argument(
        "--metric",
        choices=METRICS,
        default="accuracy",
        help="what a drop is measured in and sorted by: accuracy (overall; per action its "
        "recall) or probability (the mean probability of the dataset's action); table.json "
        "holds both (default %(default)s)",
    )
    p.add_argument(
        "--top",
        type=int,
        metavar="N",
        help="print and chart only the N most important features (default: all; table.md and "
        "table.json hold all)",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        help="the folder table.md, table.json and importance.png go to (default: "
        "reports/explain/<the model's folder name>/)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")
    p.set_defaults(handler=_cmd_explain)
    return p
