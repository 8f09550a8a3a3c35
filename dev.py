#!/usr/bin/env python3
"""otonom-rl developer entry point: the two README commands, on a machine with only Python and pip.

    python3 dev.py run      # the main job: the whole pipeline on the embedded default
    python3 dev.py test     # the whole test suite

Other commands:

    python3 dev.py lint     # ruff (lint + format check) and mypy
    python3 dev.py shell    # print the path of the development environment's python
    python3 dev.py hatch ARGS...   # any hatch command in the bootstrapped hatch

How it works: the first call makes a small private virtual environment in `.bootstrap/` holding
hatch (pinned below), then hands over to `hatch run ...`. Hatch builds the workspace
environment in `.venv/` with pip: the three packages under `packages/` installed
editable (so editing one is seen by the others without reinstalling), plus the dev tools and
`torch==2.13.0` (see the root pyproject.toml). Nothing outside this folder is touched.
Only the Python standard library is used here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
BOOTSTRAP = ROOT / ".bootstrap"
VENV = ROOT / ".venv"
HATCH_REQUIREMENT = "hatch>=1.16,<2"
MIN_PYTHON = (3, 10)


def _bin(env: Path, name: str) -> Path:
    scripts = env / ("Scripts" if os.name == "nt" else "bin")
    suffix = ".exe" if os.name == "nt" else ""
    return scripts / f"{name}{suffix}"


def _say(text: str) -> None:
    print(f"[dev] {text}", flush=True)


def _first_run_banner() -> None:
    """What the first call installs, and roughly how long it takes (printed once, before)."""
    _say("first run: setting up this folder (once; later calls start at once)")
    _say(f"  step 1/2: {HATCH_REQUIREMENT} into .bootstrap/ (about 30 s)")
    _say(
        "  step 2/2: the development environment into .venv/: the three packages (editable), "
        "torch 2.13.0 CPU build (~200 MB), onnx, onnxruntime, pytest, ruff, mypy, ... "
        "(about 2-3 minutes on 2 cores with a warm pip cache, longer on a cold one)"
    )


def _ensure_hatch() -> Path:
    hatch = _bin(BOOTSTRAP, "hatch")
    if hatch.exists():
        return hatch
    _say(f"step 1/2: creating {BOOTSTRAP.name}/ with {HATCH_REQUIREMENT} ...")
    start = time.monotonic()
    venv.EnvBuilder(with_pip=True, clear=True).create(BOOTSTRAP)
    py = _bin(BOOTSTRAP, "python")
    subprocess.run(
        [str(py), "-m", "pip", "install", "--disable-pip-version-check", HATCH_REQUIREMENT],
        check=True,
    )
    if not hatch.exists():
        raise SystemExit(f"[dev] hatch was installed but {hatch} is missing")
    _say(f"step 1/2 done in {time.monotonic() - start:.0f} s")
    return hatch


def _hatch_env() -> dict[str, str]:
    env = dict(os.environ)
    # Keep hatch's own state inside the repository, so a clean clone is really clean.
    env.setdefault("HATCH_DATA_DIR", str(BOOTSTRAP / "data"))
    env.setdefault("HATCH_CACHE_DIR", str(BOOTSTRAP / "cache"))
    # Headless plotting everywhere (CI, servers).
    env.setdefault("MPLBACKEND", "Agg")
    return env


def _ensure_venv(hatch: Path, env: dict[str, str]) -> None:
    """Create .venv/ on the first call, with pip's own output (hatch -v) as the progress."""
    if _bin(VENV, "python").exists():
        return
    _say(f"step 2/2: creating {VENV.name}/ (pip's output follows) ...")
    start = time.monotonic()
    code = subprocess.call([str(hatch), "-v", "env", "create"], cwd=ROOT, env=env)
    if code != 0:
        raise SystemExit(
            f"[dev] creating {VENV.name}/ failed (exit {code}); see pip's output above, then run "
            f"the same command again (delete {VENV.name}/ first if it is half made)"
        )
    _say(f"step 2/2 done in {time.monotonic() - start:.0f} s; set-up complete")


def _hatch(args: list[str], *, needs_venv: bool = True) -> int:
    first = not _bin(BOOTSTRAP, "hatch").exists() or (
        needs_venv and not _bin(VENV, "python").exists()
    )
    if first:
        _first_run_banner()
    hatch = _ensure_hatch()
    env = _hatch_env()
    if needs_venv:
        _ensure_venv(hatch, env)
    return subprocess.call([str(hatch), *args], cwd=ROOT, env=env)


COMMANDS = {
    "run": lambda a: _hatch(["run", "otonom-train", "pipeline", *a]),
    "test": lambda a: _hatch(["run", "test", *a]),
    "lint": lambda a: _hatch(["run", "lint", *a]),
    "shell": lambda a: _hatch(["run", "python", "-c", "import sys; print(sys.executable)"]),
    "hatch": lambda a: _hatch(list(a), needs_venv=False),
}


def main(argv: list[str]) -> int:
    if sys.version_info < MIN_PYTHON:
        found = ".".join(map(str, sys.version_info[:3]))
        print(f"[dev] otonom-rl needs Python >= 3.10, this is {found}", file=sys.stderr)
        return 2
    if not argv or argv[0] in {"-h", "--help", "help"} or argv[0] not in COMMANDS:
        print(__doc__)
        return 0 if argv and argv[0] in {"-h", "--help", "help"} else 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
