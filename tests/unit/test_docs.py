"""Generated documentation stays in step with the code it is generated from."""

from pathlib import Path

from kvstream.handlers.registry import compatibility_markdown

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_compatibility_table_is_up_to_date() -> None:
    text = (DOCS / "compatibility.md").read_text(encoding="utf-8")
    assert compatibility_markdown() in text, (
        "docs/compatibility.md is stale: regenerate with `python -m kvstream.handlers.registry`"
    )
