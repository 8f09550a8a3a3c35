"""Stages the pipeline, the walk-forward validation and the production gate share.

The data stage: ``refuse_unknown_before_creating`` (before a SQLite store is created) and
``add_demo_symbols`` (missing ``DEMO-*`` symbols generated, other missing ones refused).

``backtest_pair`` is the one "backtest with and without the RL analyst" of the trainer: the
pipeline's held-out period (stage 6), each walk-forward window's test period and the gate's
out-of-sample period all run it, and the gate accepts the pair it is given (the pipeline passes
its held-out pair, so the same two backtests are not run twice). ``fallback_backtest`` is the
gate's third run: with the RL analyst on and its model file gone.

Importing this module imports neither torch nor the runtime's store.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import tempfile
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from otonom_runtime.backtest import BacktestReport
    from otonom_runtime.policy import RlPolicy
    from otonom_runtime.strategy import StrategyConfig
    from otonom_runtime.synth import SynthReport

__all__ = [
    "RlPair",
    "add_demo_symbols",
    "backtest_pair",
    "fallback_backtest",
    "refuse_unknown_before_creating",
    "synthetic_beside_real",
]


@dataclass(frozen=True)
class RlPair:
    """One period backtested without (``off``) and with (``on``) the RL analyst."""

    off: BacktestReport
    on: BacktestReport

    def covers(self, symbols: Sequence[str], start: dt.date, end: dt.date) -> bool:
        """Whether both runs are of ``symbols`` (in that order) over ``start .. end``."""
        return all(
            list(r.symbols) == list(symbols) and (r.start, r.end) == (start, end)
            for r in (self.off, self.on)
        )


def backtest_pair(
    session: Any,
    strategy: StrategyConfig,
    symbols: Sequence[str],
    start: dt.date,
    end: dt.date,
    policy: RlPolicy,
    *,
    purpose: str,
    say: Callable[[str], None] | None = None,
) -> RlPair:
    """``strategy`` on ``symbols`` over ``start .. end``, first with the RL analyst switched off,
    then with ``policy`` as the RL analyst; both runs stored with ``purpose`` (an internal one:
    ``evaluation``, ``gate``). ``say`` (when given) hears a line before each run."""
    from otonom_runtime.backtest import run_backtest

    if say is not None:
        say("  backtest without RL ...")
    off = run_backtest(session, strategy, symbols, start, end, use_rl=False, purpose=purpose)
    if say is not None:
        say("  backtest with RL ...")
    on = run_backtest(
        session, strategy, symbols, start, end, use_rl=True, policy=policy, purpose=purpose
    )
    return RlPair(off, on)


class _Hold(logging.Handler):
    """Keeps log records instead of printing them."""

    def __init__(self, into: list[logging.LogRecord]) -> None:
        super().__init__()
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record)


def fallback_backtest(
    session: Any, strategy: StrategyConfig, model_path: Path, plain: BacktestReport
) -> tuple[int, str | None, bool]:
    """Point ``strategy`` at a copy of the model, delete the copy, backtest ``plain``'s symbols
    and period with RL on (purpose ``gate``).

    Returns (run id, the fallback reason, whether the equity curve equals ``plain``'s: the
    same period backtested without RL)."""
    from otonom_runtime.backtest import run_backtest

    tmp = Path(tempfile.mkdtemp(prefix="otonom-check-"))
    try:
        copy = tmp / model_path.name
        shutil.copyfile(model_path, copy)
        sidecar = model_path.with_name(model_path.name + ".sha256")
        if sidecar.is_file():
            shutil.copyfile(sidecar, copy.with_name(copy.name + ".sha256"))
        rl = replace(
            strategy.ensemble.rl_policy, enabled=True, model_path=str(copy), model_file=copy
        )
        with_rl = replace(strategy, ensemble=replace(strategy.ensemble, rl_policy=rl))
        copy.unlink()  # the model disappears between configuration and start-up
        # the runtime's warnings about it are expected here: held back (the reason is in the table)
        runtime_log = logging.getLogger("otonom_runtime")
        held: list[logging.LogRecord] = []
        runtime_log.addHandler(handler := _Hold(held))
        propagate, runtime_log.propagate = runtime_log.propagate, False
        try:
            broken = run_backtest(
                session, with_rl, list(plain.symbols), plain.start, plain.end, use_rl=True,
                purpose="gate",
            )  # fmt: skip
        finally:
            runtime_log.removeHandler(handler)
            runtime_log.propagate = propagate
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    same = bool(
        np.array_equal(broken.equity, plain.equity) and np.array_equal(broken.dates, plain.dates)
    )
    return broken.run_id, broken.fallback_reason, same


def refuse_unknown_before_creating(
    url: str, symbols: Sequence[str], importing: set[str], error: type[Exception]
) -> None:
    """Raise ``error`` when the store is a SQLite file that does not exist yet and a symbol is
    neither a DEMO-* name (generated) nor imported by this call: checked before the store is
    created, so the failed command leaves no empty store behind."""
    from otonom_runtime import StoreError
    from otonom_runtime.cli import require_store

    try:
        require_store(url)
    except StoreError:
        unknown = [s for s in symbols if not s.startswith("DEMO-") and s not in importing]
        if unknown:
            raise error(
                f"symbols {unknown} are not in the store (there is no store at {url} yet); "
                "import them with --import-csv FILE --symbol NAME (or `otonom data import-csv "
                "FILE --symbol NAME`), or use DEMO-* names for the synthetic market"
            ) from None


def add_demo_symbols(
    session: Any,
    symbols: Sequence[str],
    demo: tuple[dt.date, dt.date, int],
    refuse: Callable[[list[str]], Exception],
    importing: Collection[str] = (),
) -> SynthReport | None:
    """Generate the ``DEMO-*`` symbols the store lacks (synthetic, over ``demo`` = (start, end,
    seed)) and return the generator's report, or None when none was missing; a missing symbol
    that is not a ``DEMO-*`` name (nor being imported) raises ``refuse(those symbols)``."""
    from otonom_runtime.store import list_symbols
    from otonom_runtime.synth import write_synthetic

    present = {info.name for info in list_symbols(session)}
    missing = [s for s in symbols if s not in present]
    unknown = [s for s in missing if not s.startswith("DEMO-") and s not in importing]
    if unknown:
        raise refuse(unknown)
    generate = [s for s in missing if s.startswith("DEMO-")]
    if not generate:
        return None
    start, end, seed = demo
    return write_synthetic(session, generate, start, end, seed)


def synthetic_beside_real(session: Any, symbols: Sequence[str]) -> str | None:
    """A note for a run whose symbols are all synthetic (``DEMO-*``, generated) in a store that
    also holds real ones: without ``--symbol`` the pipeline and walk-forward train on the demo
    market, which a user who imported their own data may not expect. None otherwise."""
    from otonom_runtime.store import list_symbols

    stored = list_symbols(session)
    synthetic = {info.name for info in stored if info.is_synthetic}
    real = [info.name for info in stored if not info.is_synthetic]
    if not real or not all(s in synthetic for s in symbols):
        return None
    shown = ", ".join(real[:5]) + (f" and {len(real) - 5} more" if len(real) > 5 else "")
    return (
        f"note: this run's symbols ({', '.join(symbols)}) are the synthetic demo market; the "
        f"store's own data ({shown}) is trained on with --symbol NAME"
    )
