"""dev.py's first run says what it installs and how long it takes; later calls add nothing.

The real set-up (hatch, then torch into .venv/) takes minutes, so hatch is stood in for by a
small executable script in a temporary folder: dev.py's own code runs unchanged against it.
"""

from __future__ import annotations

import importlib.util
import os
import stat
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]

FAKE_HATCH = """#!/bin/sh
if [ "$1" = "-v" ] && [ "$2" = "env" ] && [ "$3" = "create" ]; then
  echo "Collecting torch==2.13.0"
  mkdir -p .venv/bin && touch .venv/bin/python
  exit 0
fi
echo "hatch $*"
"""


def _dev(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("dev_under_test", ROOT / "dev.py")
    assert spec is not None
    assert spec.loader is not None
    dev = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dev)
    monkeypatch.setattr(dev, "ROOT", tmp_path)
    monkeypatch.setattr(dev, "BOOTSTRAP", tmp_path / ".bootstrap")
    monkeypatch.setattr(dev, "VENV", tmp_path / ".venv")
    hatch = tmp_path / ".bootstrap" / "bin" / "hatch"
    hatch.parent.mkdir(parents=True)
    hatch.write_text(FAKE_HATCH, encoding="utf-8")
    hatch.chmod(hatch.stat().st_mode | stat.S_IXUSR)
    return dev


@pytest.mark.skipif(os.name == "nt", reason="the stand-in hatch is a POSIX shell script")
def test_first_call_says_what_and_how_long_then_later_calls_are_quiet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    dev = _dev(tmp_path, monkeypatch)
    assert dev.main(["shell"]) == 0
    first = capfd.readouterr().out
    lines = first.splitlines()
    assert lines[0] == "[dev] first run: setting up this folder (once; later calls start at once)"
    assert "torch 2.13.0 CPU build (~200 MB)" in first
    assert "about 2-3 minutes on 2 cores with a warm pip cache, longer on a cold one" in first
    assert "[dev] step 2/2: creating .venv/ (pip's output follows) ..." in lines
    assert "Collecting torch==2.13.0" in lines  # pip's own output is shown, not hidden
    done = [line for line in lines if line.startswith("[dev] step 2/2 done in ")]
    assert len(done) == 1
    assert done[0].endswith(" s; set-up complete")
    assert lines[-1].startswith("hatch run python -c ")

    assert dev.main(["shell"]) == 0
    later = capfd.readouterr().out
    assert later.splitlines() == [lines[-1]]  # nothing but the command's own output


@pytest.mark.skipif(os.name == "nt", reason="the stand-in hatch is a POSIX shell script")
def test_a_failed_set_up_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    dev = _dev(tmp_path, monkeypatch)
    (tmp_path / ".bootstrap" / "bin" / "hatch").write_text("#!/bin/sh\nexit 3\n", encoding="utf-8")
    with pytest.raises(SystemExit, match=r"creating \.venv/ failed \(exit 3\); see pip's output"):
        dev.main(["test"])
    assert not (tmp_path / ".venv").exists()
