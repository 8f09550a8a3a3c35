"""Hot model reload and the daemon's recorded state.

``ModelWatch`` follows the strategy's ``ensemble.rl_policy.model_path`` as the strategy loader
resolves it (``resolve_strategy_model``: a model folder's ``latest`` pointer names the promoted
version). Between ticks, ``check`` notices a promoted version that is not the one in service
(another file, or the same file rewritten), loads it beside the model in service with
``load_rl_policy`` (every check the loader makes: sidecar hash, model digest, golden outputs,
schema fingerprint, signature; nothing re-implemented here) and, when it passes, swaps it in
(``Ensemble.serve``) for the next tick. A candidate that fails keeps the model in service (or,
when there never was one, the ensemble deciding without the RL analyst) and is remembered as
refused with the reason: it is not tried again until the promoted version changes again.

``daemon_state`` gives the columns of the daemon's ``DaemonState`` row (``otonom status``):
the heartbeat, the model in service, the refused candidate, the counts and the recent predict
latency percentiles.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from otonom_runtime._errors import PolicyError, StrategyError
from otonom_runtime.store import this_process

if TYPE_CHECKING:
    from otonom_runtime.daemon.tick import Ensemble

__all__ = ["ModelWatch", "Refusal", "daemon_state", "latency_percentiles"]

log = logging.getLogger("otonom_runtime.daemon")

_Key = tuple[str, ...]
_PERCENTILES: Final = (50, 90, 99)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _version(path: str | os.PathLike[str] | None) -> str | None:
    """A model file's version: the name of the folder that holds it."""
    return None if path is None else Path(path).parent.name


def _key(path: Path) -> _Key:
    """What identifies a promoted model: its file, and the file's size and modification time
    (a file rewritten in place is a new candidate)."""
    info = path.stat()
    return (str(path), str(info.st_size), str(info.st_mtime_ns))


@dataclass(frozen=True)
class Refusal:
    """A candidate the reload refused: its file (None: the promoted version resolved to no
    file), its version, why (the loader's one-line error) and when."""

    file: str | None
    version: str | None
    reason: str
    at: dt.datetime


class ModelWatch:
    """The hot reload of ``ensemble``'s model (see the module's docstring).

    Inactive (``check`` does nothing) when the RL analyst is off or the ensemble was handed a
    policy rather than a model path. ``reloads`` and ``refusals`` count the candidates swapped
    in and refused; ``refused`` is the newest refusal; ``since``: when the model in service
    was put in service.
    """

    def __init__(self, ensemble: Ensemble) -> None:
        rl_cfg = ensemble.config.ensemble.rl_policy
        self.ensemble = ensemble
        self.reloads = 0
        self.refusals = 0
        self.refused: Refusal | None = None
        self.since: dt.datetime | None = None
        self._model_path = rl_cfg.model_path
        self._base_dir = ensemble.config.base_dir
        self._device = rl_cfg.device
        self._serving: _Key | None = None
        self._seen: _Key | None = None
        policy = None if ensemble.rl is None else ensemble.rl.policy
        path = getattr(policy, "path", None)
        if isinstance(path, Path) and path.is_file():
            self._serving = self._seen = _key(path)
            self.since = _now()
        elif ensemble.rl is not None and policy is None and rl_cfg.model_file is not None:
            # the strategy's model failed to load at start: refused already, not tried again
            self._seen = _key(rl_cfg.model_file) if rl_cfg.model_file.is_file() else None
            self._refuse(rl_cfg.model_file, ensemble.rl_error or "no policy")
        self.active = (
            ensemble.rl is not None and self._model_path is not None and not ensemble.policy_given
        )

    def _refuse(self, file: Path | None, reason: str) -> str:
        self.refusals += 1
        self.refused = Refusal(None if file is None else str(file), _version(file), reason, _now())
        kept = "the model in service kept" if self._serving else "deciding without the RL analyst"
        line = f"model candidate {file or self._model_path} refused ({kept}): {reason}"
        log.warning("%s", line)
        return line

    def check(self) -> str | None:
        """Look at the promoted version; a new one is loaded, checked and swapped in, or
        refused. Returns a line saying which (None: nothing new). Never raises for a model."""
        if not self.active:
            return None
        from otonom_runtime.policy import load_rl_policy
        from otonom_runtime.strategy import resolve_strategy_model

        assert self._model_path is not None
        try:
            candidate = resolve_strategy_model(self._model_path, self._base_dir)
            key = _key(candidate)
        except (StrategyError, OSError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            if self._seen == ("unresolved", reason):
                return None
            self._seen = ("unresolved", reason)
            return self._refuse(None, reason)
        if key in (self._seen, self._serving):
            self._seen = key
            return None
        self._seen = key
        try:
            policy = load_rl_policy(candidate, device=self._device, threads=1)
        except (PolicyError, OSError, ValueError) as exc:
            return self._refuse(candidate, f"{type(exc).__name__}: {exc}")
        self.ensemble.serve(policy)
        self._serving, self.since = key, _now()
        self.reloads += 1
        line = f"model reloaded: version {_version(candidate)} in service ({candidate})"
        log.info("%s", line)
        return line


def latency_percentiles(latencies_ms: list[float]) -> dict[str, float] | None:
    """``{"n", "p50", "p90", "p99", "max"}`` of predict latencies in milliseconds (None: no
    call yet)."""
    if not latencies_ms:
        return None
    values = np.asarray(latencies_ms, dtype=np.float64)
    out = {f"p{q}": float(np.percentile(values, q)) for q in _PERCENTILES}
    return {"n": float(values.size), **out, "max": float(values.max())}


def daemon_state(
    watch: ModelWatch, *, started: dt.datetime, ticks: int, status: str = "running"
) -> dict[str, Any]:
    """The columns of the daemon's ``DaemonState`` row now (``write_daemon_state``)."""
    ensemble = watch.ensemble
    policy = None if ensemble.rl is None else ensemble.rl.policy
    path = getattr(policy, "path", None)
    sha = getattr(policy, "sha256", None)
    host, pid, _ = this_process()
    refused = watch.refused
    return {
        "host": host,
        "pid": pid,
        "status": status,
        "started_at": started,
        "heartbeat_at": _now(),
        "ticks": ticks,
        "fallbacks": ensemble.fallbacks,
        "reloads": watch.reloads,
        "refusals": watch.refusals,
        "model_file": None if path is None else str(path),
        "model_version": _version(path),
        "model_sha256": sha if isinstance(sha, str) else None,
        "model_since": watch.since if policy is not None else None,
        "refused_file": None if refused is None else refused.file,
        "refused_version": None if refused is None else refused.version,
        "refused_reason": None if refused is None else refused.reason,
        "refused_at": None if refused is None else refused.at,
        "latency_ms": latency_percentiles(list(ensemble.latencies_ms)),
    }
