"""The results of ``otonom-train tune`` (``otonom_trainer.tune``): ``TuneResult`` (the study's
trials and its best one), the printed summary (a markdown table of the trials, the number of
configurations tried, the best configuration) and the files: ``best_config.yaml`` (a
``TrainingConfig`` file for ``otonom-train train --config``, with the study, trial and count in
its header) and ``trials.csv`` (one row per trial), each written atomically."""

from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from otonom_schema import atomic_path, atomic_write
from otonom_trainer.config import TrainingConfig
from otonom_trainer.tune_space import SearchSpace

__all__ = ["TrialRow", "TuneResult", "fmt_value", "summary", "write_results"]


@dataclass(frozen=True)
class TrialRow:
    """One trial of the study: its state, value, knobs and what its training reported."""

    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    attrs: dict[str, Any]


@dataclass(frozen=True)
class TuneResult:
    """A finished ``tune()``: the study's best trial and every trial it holds."""

    study_name: str
    objective: str
    best: TrialRow
    best_config: TrainingConfig
    trials: tuple[TrialRow, ...]
    n_tried: int
    """Configurations tried: the study's finished trials (complete, failed, pruned)."""
    n_this_worker: int
    files: tuple[Path, ...] = ()

    def counts(self) -> dict[str, int]:
        """Trials by state (``COMPLETE``, ``FAIL``, ``PRUNED``, ``RUNNING``, ...)."""
        out: dict[str, int] = {}
        for t in self.trials:
            out[t.state] = out.get(t.state, 0) + 1
        return out

    def table(self, limit: int = 20) -> str:
        """A markdown table of the trials (the ``limit`` best completed ones, then failures)."""
        knobs = sorted({k for t in self.trials for k in t.params}, key=_knob_order)
        head = ["trial", "state", self.objective, "epochs", "seconds", *knobs]
        done = sorted(
            (t for t in self.trials if t.value is not None), key=lambda t: -(t.value or 0.0)
        )
        rest = [t for t in self.trials if t.value is None and t.state != "COMPLETE"]
        shown = (done + rest)[:limit]
        lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
        for t in shown:
            cells = [
                str(t.number) + (" *" if t.number == self.best.number else ""),
                t.state.lower(),
                "-" if t.value is None else f"{t.value:.4f}",
                str(t.attrs.get("epochs_run", "-")),
                fmt_value(t.attrs.get("seconds")),
                *(fmt_value(t.params.get(k)) for k in knobs),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        if len(self.trials) > len(shown):
            lines.append(f"({len(self.trials) - len(shown)} more trials in trials.csv)")
        return "\n".join(lines)


def _knob_order(name: str) -> int:
    names = list(SearchSpace().to_dict())
    return names.index(name) if name in names else len(names)


def fmt_value(value: Any) -> str:
    """A knob or figure as the table shows it (floats to 3 significant digits)."""
    return "-" if value is None else f"{value:.3g}" if isinstance(value, float) else str(value)


def summary(result: TuneResult) -> str:
    """The trials' table, the count of configurations tried and the best configuration."""
    counts = ", ".join(f"{n} {s.lower()}" for s, n in sorted(result.counts().items()))
    best = result.best
    lines = [
        "",
        result.table(),
        "",
        f"Configurations tried: {result.n_tried} (study {result.study_name!r}: {counts}; "
        f"this worker ran {result.n_this_worker})",
        f"Best: trial {best.number}, {result.objective} {best.value:.4f}",
        *(f"  {k}: {fmt_value(v)}" for k, v in best.params.items()),
    ]
    lines += [f"Wrote {p}" for p in result.files]
    return "\n".join(lines)


def _best_yaml(result: TuneResult) -> str:
    best = result.best
    head = (
        f"# otonom-train tune: study {result.study_name!r}, trial {best.number} of "
        f"{result.n_tried} configurations tried ({result.objective} {best.value:.4f} on the "
        "time split's validation rows)\n"
        "# train it: otonom-train train --config best_config.yaml\n"
    )
    return head + yaml.safe_dump(result.best_config.to_dict(), sort_keys=False)


def write_results(result: TuneResult, folder: Path) -> TuneResult:
    """``best_config.yaml`` and ``trials.csv`` (columns: the trial, its state and value, what
    its training reported, its knobs, its worker and error) in ``folder``, each atomically;
    ``result`` with their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    best_path = atomic_write(folder / "best_config.yaml", _best_yaml(result))
    knobs = sorted({k for t in result.trials for k in t.params}, key=_knob_order)
    attrs = ["val_acc", "macro_f1", "best_val_loss", "best_epoch", "epochs_run", "seconds"]
    head = ["number", "state", result.objective, *attrs, *knobs, "worker", "error"]
    csv_path = folder / "trials.csv"
    with atomic_path(csv_path) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(head)
        for t in result.trials:
            values = {**t.attrs, **t.params}
            w.writerow(
                [t.number, t.state, "" if t.value is None else t.value]
                + ["" if values.get(k) is None else values[k] for k in head[3:]]
            )
    return dataclasses.replace(result, files=(best_path, csv_path))
