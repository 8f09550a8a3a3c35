"""Strategy files are parsed with limits: hostile YAML (alias bombs, recursive aliases, tags,
oversize files, deep nesting) and absurd numbers are refused with a ``FILE[:LINE]`` error.

Each CLI case runs the real ``python -m otonom_runtime strategy check FILE`` in a subprocess;
its ``timeout=60`` only guards the test run against a hang (nothing is timed).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from otonom_runtime import StrategyError, load_strategy

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "strategies").glob("*.yaml"))


def _check(path: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "otonom_runtime", "strategy", "check", str(path)],
        cwd=cwd,
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=60,  # a guard against a hang, not a timed assertion
    )


def _refused(path: Path, line: int | None) -> str:
    """Check ``path`` through the CLI: exit 1, one ``error:`` line; the problem line."""
    out = _check(path, path.parent)
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert [x for x in lines if x.startswith("error:")] == [lines[0]]
    assert lines[0] == f"error: invalid strategy {path} (1 problem):"
    assert len(lines) == 2, lines
    where = f"{path}:{line}:" if line is not None else f"{path}: "  # :LINE: or :LINE:COL:
    assert lines[1].startswith("  " + where), lines[1]
    return lines[1]


def _alias_bomb(levels: int = 9, width: int = 9) -> str:
    rows = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels + 1):
        rows.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    return "\n".join(rows) + "\n"


# --- structure ---------------------------------------------------------------------------------


def test_an_alias_bomb_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text("name: bomb\n" + _alias_bomb(), encoding="utf-8")
    assert path.stat().st_size < 2048  # 9**10 strings once expanded
    assert "anchor &l0 refused" in _refused(path, 2)


def test_a_recursive_alias_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rec.yaml"
    # a mapping holding itself: the old line-number walk recursed until RecursionError
    path.write_text("name: r\ncosts: &x\n  again: *x\n", encoding="utf-8")
    assert "anchor &x refused" in _refused(path, 2)


def test_an_alias_alone_is_refused(tmp_path: Path) -> None:
    # an alias to an anchor that does not exist is still met as an alias, before composing
    path = tmp_path / "alias.yaml"
    path.write_text("name: a\nensemble:\n  min_score: *nowhere\n", encoding="utf-8")
    assert "alias *nowhere refused" in _refused(path, 3)


def test_a_python_tag_is_refused_and_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "tag.yaml"
    path.write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\n", encoding="utf-8")
    problem = _refused(path, 1)
    assert "YAML syntax error" in problem
    assert "python/object/apply:os.system" in problem
    assert not marker.exists()
    with pytest.raises(StrategyError):
        load_strategy(path)
    assert not marker.exists()


def test_an_oversize_file_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    with path.open("wb") as f:  # sparse: 2 MiB of zero bytes, not valid UTF-8 YAML anyway
        f.truncate(2 << 20)
    problem = _refused(path, None)
    # the size is reported, not the decoding: the bytes were never read
    assert f"the file is {2 << 20} bytes; expected a strategy file of at most 1048576" in problem


def test_an_endless_device_is_read_no_further_than_the_limit() -> None:
    # /dev/zero has st_size 0: the read itself is bounded
    with pytest.raises(StrategyError) as err:
        load_strategy("/dev/zero")
    assert err.value.problems == (
        "/dev/zero: the file is over 1048576 bytes; expected at most that",
    )


def test_a_file_of_exactly_one_mib_is_read(tmp_path: Path) -> None:
    path = tmp_path / "full.yaml"
    head = b"name: full\n"
    path.write_bytes(head + b"#" * ((1 << 20) - len(head) - 1) + b"\n")
    assert path.stat().st_size == 1 << 20
    assert load_strategy(path).name == "full"


def test_deep_nesting_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("name: d\nx: " + "[" * 100 + "]" * 100 + "\n", encoding="utf-8")
    assert "YAML nested 33 levels deep; expected at most 32 levels" in _refused(path, 2)


def test_nesting_at_the_limit_is_parsed_then_judged_by_keys(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("name: d\nx: " + "[" * 31 + "]" * 31 + "\n", encoding="utf-8")
    with pytest.raises(StrategyError) as err:
        load_strategy(path)
    assert err.value.problems[0].startswith(f"{path}:2: x: unknown key")


def test_too_many_nodes_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "wide.yaml"
    path.write_text("name: w\nx: [" + "1," * 100_000 + "1]\n", encoding="utf-8")
    assert path.stat().st_size < 1 << 20
    assert "more than 100000 YAML nodes; expected a smaller file" in _refused(path, 2)


# --- numbers -----------------------------------------------------------------------------------

_BOUNDS = [
    # (section path, key, refused value, boundary value accepted, expected range)
    ("ensemble.analyst_weights", "tech", "1.7e+308", "1000.0", "[0, 1000]"),
    ("ensemble.analyst_weights", "rl", "1000.5", "0.0", "[0, 1000]"),
    ("ensemble.analyst_weights", "news", "-0.5", "1000", "[0, 1000]"),
    ("analysts.tech.weights", "trend", "1.0e+6", "1000", "[0, 1000]"),
    ("analysts.news", "macro_weight", "1001", "1000", "[0, 1000]"),
    ("costs", "commission_bps", "1.0e+9", "10000", "[0, 10000]"),
    ("costs", "slippage_bps", "10000.5", "0", "[0, 10000]"),
    ("costs", "commission_bps", "-1", "0", "[0, 10000]"),
    ("portfolio", "max_leverage", "100", "4", "(0, 4]"),
    ("portfolio", "max_leverage", "0", "0.001", "(0, 4]"),
    ("portfolio", "initial_capital", "1.0e+16", "1.0e+15", "(0, 1e+15]"),
    ("portfolio", "initial_capital", "0", "0.01", "(0, 1e+15]"),
    ("ensemble", "min_score", "1.5", "1", "[0, 1]"),
    ("ensemble", "min_score", "-0.1", "0", "[0, 1]"),
]


def _nested(section: str, key: str, value: str) -> str:
    parts = [*section.split("."), key]
    rows = [f"{'  ' * i}{p}:" for i, p in enumerate(parts[:-1])]
    rows.append(f"{'  ' * (len(parts) - 1)}{parts[-1]}: {value}")
    return "name: n\n" + "\n".join(rows) + "\n"


@pytest.mark.parametrize(("section", "key", "bad", "edge", "expected"), _BOUNDS)
def test_a_number_out_of_range_is_refused(
    tmp_path: Path, section: str, key: str, bad: str, edge: str, expected: str
) -> None:
    path = tmp_path / "n.yaml"
    path.write_text(_nested(section, key, bad), encoding="utf-8")
    with pytest.raises(StrategyError) as err:
        load_strategy(path)
    line = len(section.split(".")) + 2
    shown = f"{float(bad):g}"
    assert err.value.problems == (
        f"{path}:{line}: {section}.{key}: received {shown}, expected a value in {expected}",
    )


@pytest.mark.parametrize(("section", "key", "bad", "edge", "expected"), _BOUNDS)
def test_the_boundary_value_is_accepted(
    tmp_path: Path, section: str, key: str, bad: str, edge: str, expected: str
) -> None:
    path = tmp_path / "n.yaml"
    path.write_text(_nested(section, key, edge), encoding="utf-8")
    cfg = load_strategy(path)
    obj: object = cfg
    for part in [*section.split("."), key]:
        obj = getattr(obj, part)
    assert obj == float(edge)


def test_the_huge_weight_is_refused_by_strategy_check(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_text(_nested("ensemble.analyst_weights", "tech", "1.7e+308"), encoding="utf-8")
    problem = _refused(path, 4)
    assert problem.endswith(
        "ensemble.analyst_weights.tech: received 1.7e+308, expected a value in [0, 1000]"
    )


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_the_shipped_strategies_still_pass(path: Path) -> None:
    out = _check(path, ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "ok"
