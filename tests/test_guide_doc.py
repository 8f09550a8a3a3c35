"""docs/guide.md and README.md, run as a reader runs them: every fenced block, in order, in a
fresh folder.

The kinds of block (the language after the opening fence):

* ``bash``: run with ``bash -e`` in the folder, the development environment's ``bin`` first on
  PATH (so ``otonom``, ``otonom-train`` and ``python`` are the ones under test);
* ``python``: run with this interpreter, in the same folder;
* ``yaml``: a file the following commands use; the line before the block says where it goes
  (``<!-- file: PATH -->``), and the test writes it there;
* ``text``: a diagram, or example output. Output marked ``<!-- output -->`` on the line before
  it is checked against what the runnable block above it printed: each of its lines (but
  ``...``) must be a line of that output, up to the numbers in it.

A bash or python block may be marked ``<!-- not-run: REASON -->`` on the line before it: only
real market data and an external PostgreSQL server are accepted reasons, and the exact list of
such blocks is pinned here, so a block cannot quietly stop running. The README also has the
block of its two commands themselves (``python3 dev.py run`` / ``test``): the main job runs in
tests/test_clean_checkout.py, the test command is this suite.

The folder starts like a checkout (``strategies/`` and ``scripts/`` copied in; for the README
also the tracked ``models/``, the shipped default model) with no store: each document makes its
own synthetic market, datasets and models. As in
tests/test_guide_snippets.py and tests/test_guide_pipeline.py, the subprocesses inherit this
environment (PYTHONPATH included) minus ``OTONOM_DATABASE_URL``, so the default store is the
folder's own ``data/otonom.db``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.long  # minutes of subprocess runs: scheduled first (conftest.py)

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "guide.md"
README = ROOT / "README.md"

NOT_RUN_REASONS = {"needs real data", "needs an external PostgreSQL server"}

# Every block the test does not run, by its first line: change this list only together with
# the guide, and only for a block that needs real data or a PostgreSQL server.
NOT_RUN = [
    ("needs real data", "otonom data import-csv BTC-USD_yahoo_daily.csv --symbol BTC-USD"),
    (
        "needs an external PostgreSQL server",
        "otonom --database-url postgresql+psycopg://trader@localhost:5432/otonom data list",
    ),
]

README_NOT_RUN_REASONS = {*NOT_RUN_REASONS, "the two commands themselves"}
README_NOT_RUN = [
    ("the two commands themselves", "python3 dev.py run"),
    ("needs real data", "otonom data import-csv BTC-USD_yahoo_daily.csv --symbol BTC-USD"),
    (
        "needs an external PostgreSQL server",
        "otonom --database-url postgresql+psycopg://user@host/db data list",
    ),
]

_FENCE = re.compile(r"^```(?P<lang>[a-z]*)\n(?P<body>.*?)^```$", re.MULTILINE | re.DOTALL)
_MARK = re.compile(r"<!-- (?:(?P<kind>not-run|file): (?P<value>[^>]+?)|(?P<output>output)) -->")
_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?")


@dataclass(frozen=True)
class Block:
    lang: str
    body: str
    line: int  # of the opening fence in docs/guide.md, 1-based
    mark: tuple[str, str] | None  # ("not-run", reason), ("file", path) or ("output", "")

    @property
    def first_line(self) -> str:
        return self.body.splitlines()[0].strip()


def guide_blocks(text: str) -> list[Block]:
    """The fenced blocks of ``text`` in order, each with the marker on the line before it."""
    blocks = []
    for m in _FENCE.finditer(text):
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        mark = _MARK.fullmatch(before.strip())
        blocks.append(
            Block(
                lang=m.group("lang"),
                body=m.group("body"),
                line=text.count("\n", 0, m.start()) + 1,
                mark=_mark(mark),
            )
        )
    return blocks


def _mark(m: re.Match[str] | None) -> tuple[str, str] | None:
    if m is None:
        return None
    return ("output", "") if m.group("output") else (m.group("kind"), m.group("value"))


def _shape(line: str) -> str:
    """A line with its numbers replaced by ``#``, trailing blanks removed."""
    return _NUMBER.sub("#", line).rstrip()


def output_mismatches(expected: str, printed: str) -> list[str]:
    """The lines of ``expected`` (but ``...``) that are no line of ``printed``, numbers aside."""
    shapes = {_shape(line) for line in printed.splitlines()}
    return [
        line
        for line in expected.splitlines()
        if line.strip() != "..." and _shape(line) not in shapes
    ]


def _blocks() -> list[Block]:
    return guide_blocks(GUIDE.read_text(encoding="utf-8"))


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "OTONOM_DATABASE_URL"}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["MPLBACKEND"] = "Agg"
    return env


@pytest.mark.parametrize(
    ("doc", "reasons", "pinned", "at_least"),
    [
        (GUIDE, NOT_RUN_REASONS, NOT_RUN, 20),
        (README, README_NOT_RUN_REASONS, README_NOT_RUN, 10),
    ],
    ids=["guide", "readme"],
)
def test_every_block_is_of_a_known_kind_and_only_the_pinned_ones_are_skipped(
    doc: Path, reasons: set[str], pinned: list[tuple[str, str]], at_least: int
) -> None:
    blocks = guide_blocks(doc.read_text(encoding="utf-8"))
    assert len(blocks) > at_least  # the parser sees the document's blocks
    for b in blocks:
        where = f"{doc.relative_to(ROOT)}:{b.line}"
        assert b.lang in {"bash", "python", "yaml", "text"}, f"{where}: fence language {b.lang!r}"
        if b.lang == "yaml":
            assert b.mark is not None, f"{where}: a yaml block needs <!-- file: PATH --> before it"
            assert b.mark[0] == "file", where
        elif b.mark is not None and b.mark[0] == "output":
            assert b.lang == "text", f"{where}: <!-- output --> is for text blocks"
        elif b.mark is not None:
            assert b.lang in {"bash", "python"}, f"{where}: a {b.lang} block is never run"
            assert b.mark[0] == "not-run", f"{where}: <!-- file: --> is for yaml blocks"
            assert b.mark[1] in reasons, f"{where}: not-run reason {b.mark[1]!r}"
    skipped = [
        (b.mark[1], b.first_line.split("#")[0].strip())  # the command, without its comment
        for b in blocks
        if b.mark and b.mark[0] == "not-run"
    ]
    assert skipped == pinned


def test_the_marker_parser() -> None:
    text = (
        "intro\n\n<!-- not-run: needs real data -->\n```bash\nimport me\n```\n\n"
        "<!-- file: a/b.yaml -->\n```yaml\nk: 1\n```\n```python\nprint(1)\n```\n"
        "<!-- output -->\n```text\n1\n```\n"
    )
    blocks = guide_blocks(text)
    assert [(b.lang, b.mark, b.line) for b in blocks] == [
        ("bash", ("not-run", "needs real data"), 4),
        ("yaml", ("file", "a/b.yaml"), 9),
        ("python", None, 12),
        ("text", ("output", ""), 16),
    ]
    assert blocks[1].body == "k: 1\n"


def test_output_blocks_match_up_to_numbers() -> None:
    printed = "Generated 1096 training samples\n  HOLD: 468 (42.7%)\nBest epoch: 19\n"
    assert output_mismatches("Generated 12 training samples\n...\n  HOLD: 1 (0.5%)", printed) == []
    assert output_mismatches("Generated 12 samples\nBest epoch: 3", printed) == [
        "Generated 12 samples"
    ]


def test_readme_links_the_guide() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "[docs/guide.md](docs/guide.md)" in readme


def test_the_rename_tables_project_names_exist() -> None:
    """Every ``otonom_*.name`` the guide names resolves (module attribute or submodule)."""
    import importlib

    names = sorted(set(re.findall(r"`(otonom_(?:schema|runtime|trainer)(?:\.\w+)+)", _text())))
    assert "otonom_runtime.aggregate_signals" in names
    assert "otonom_trainer.train.FocalLoss" in names
    for dotted in names:
        parts = dotted.split(".")
        obj: object = importlib.import_module(parts[0])
        for i, part in enumerate(parts[1:], start=2):
            if not hasattr(obj, part):  # a submodule not imported yet
                obj = importlib.import_module(".".join(parts[:i]))
            else:
                obj = getattr(obj, part)
        assert obj is not None, dotted


def test_the_sklearn_extra_is_declared_and_in_the_dev_environment() -> None:
    tomllib = pytest.importorskip("tomllib")
    trainer = tomllib.loads((ROOT / "packages/trainer/pyproject.toml").read_text("utf-8"))
    extra = trainer["project"]["optional-dependencies"]["sklearn"]
    assert [d.split(">")[0] for d in extra] == ["scikit-learn"]
    assert 'pip install "otonom-trainer[sklearn]"' in _text()
    root = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    members = root["tool"]["hatch"]["envs"]["default"]["workspace"]["members"]
    (member,) = [m for m in members if isinstance(m, dict) and m["path"] == "packages/trainer"]
    assert "sklearn" in member["features"]


def _text() -> str:
    return GUIDE.read_text(encoding="utf-8")


def _run_in_order(doc: Path, tmp_path: Path, copy: tuple[str, ...]) -> tuple[int, int]:
    """Run ``doc``'s blocks in order in ``tmp_path`` (``copy``: checkout folders copied in
    first); returns (blocks run, output blocks checked)."""
    for folder in copy:
        shutil.copytree(ROOT / folder, tmp_path / folder)
    env = _env()
    env["TMPDIR"] = str(tmp_path / ".tmp")  # what the commands leave there (torchrun does)
    (tmp_path / ".tmp").mkdir()
    ran = checked = 0
    printed = ""  # stdout of the last block run
    for b in guide_blocks(doc.read_text(encoding="utf-8")):
        where = f"{doc.relative_to(ROOT)}:{b.line} ({b.first_line[:60]!r})"
        if b.mark == ("output", ""):
            missing = output_mismatches(b.body, printed)
            assert not missing, f"{where}: not printed by the block above: {missing}\n{printed}"
            checked += 1
            continue
        if b.lang == "text" or (b.mark and b.mark[0] == "not-run"):
            continue
        if b.lang == "yaml":
            assert b.mark is not None
            target = tmp_path / b.mark[1]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(b.body, encoding="utf-8")
            continue
        if b.lang == "bash":
            cmd = ["bash", "-e", "-o", "pipefail", "-c", b.body]
        else:
            cmd = [sys.executable, "-c", b.body]
        out = subprocess.run(
            cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
        )
        assert out.returncode == 0, f"{where} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
        assert "Traceback" not in out.stderr, f"{where}:\n{out.stderr[-3000:]}"
        printed = out.stdout
        ran += 1
    return ran, checked


def _tracked(folder: str, tmp_path: Path) -> None:
    """Copy what git tracks under ``folder`` (the shipped default model, not the versions a
    developer trained or promoted here)."""
    files = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", folder], capture_output=True, text=True, check=True
    ).stdout.split()
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, tmp_path / name)


def test_every_readme_snippet_runs_in_order(tmp_path: Path) -> None:
    _tracked("models", tmp_path)
    ran, checked = _run_in_order(README, tmp_path, ("strategies", "scripts"))
    blocks = guide_blocks(README.read_text(encoding="utf-8"))
    assert ran == len([b for b in blocks if b.lang in {"bash", "python"}]) - len(README_NOT_RUN)
    assert checked == 0
    for path in (
        "data/otonom.db",
        "reports/check/20261205T131543Z/check.md",
        "reports/walk-forward/walk_forward.md",
        "models/rl_bc/policy_best.onnx",
    ):
        assert (tmp_path / path).is_file(), path


def test_every_snippet_runs_in_order(tmp_path: Path) -> None:
    ran, checked = _run_in_order(GUIDE, tmp_path, ("strategies", "scripts"))
    assert ran == len([b for b in _blocks() if b.lang in {"bash", "python"}]) - len(NOT_RUN)
    assert checked == 4  # the dataset's, the training's, the daemon's and the fine-tuning's outputs
    # what the walkthrough promises to leave behind
    for path in (
        "data/otonom.db",
        "data/offline_dataset.npz",
        "data/offline_dataset_test.npz",
        *(
            f"models/guide_bc/{name}"  # what Step 2's training leaves
            for name in (
                "policy_best.pt",
                "policy_best.onnx",
                "policy_best.onnx.sha256",
                "metadata.json",
                "history.csv",
                "training_curves.png",
                "confusion_matrix.png",
            )
        ),
        "reports/check/guide_bc/check.md",
        "models/guide_bc_api/policy_best.onnx",
        "models/guide_seed_456/policy_best.onnx",
        "models/guide_ensemble/policy_best.onnx",
        "reports/guide_rl_2023.png",
        "reports/guide_walk_forward/walk_forward.md",
        "models/guide_bc_ddp/policy_best.onnx",  # torchrun, two processes
        "reports/tune/guide/best_config.yaml",
        "models/guide_tuned/policy_best.onnx",
        "reports/tune/w2/trials.csv",
        "models/guide_ppo/policy_best.onnx",  # otonom-train finetune
        "models/guide_ppo/finetune.json",
    ):
        assert (tmp_path / path).is_file(), path
