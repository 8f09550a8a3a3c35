"""Documentation that is generated from code stays equal to the code."""

from __future__ import annotations

from pathlib import Path

import otonom_schema as s

ROOT = Path(__file__).resolve().parents[1]


def test_schema_doc_feature_table_is_current() -> None:
    text = (ROOT / "docs" / "schema.md").read_text(encoding="utf-8")
    start = text.index("<!-- feature-table:start -->\n") + len("<!-- feature-table:start -->\n")
    end = text.index("<!-- feature-table:end -->")
    assert text[start:end].strip() == s.feature_table_markdown(), (
        "docs/schema.md is stale: paste otonom_schema.feature_table_markdown() between the markers"
    )


def test_readme_names_the_two_commands_that_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "python3 dev.py run" in readme
    assert "python3 dev.py test" in readme
    assert "\npython3 dev.py test\n" in ci
