"""The documentation stays true: generated pages are current, links resolve, and the
README's two Quickstart commands are the ones CI runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

from shardflow.config import job_config_schema
from shardflow.configdoc import render

REPO = Path(__file__).resolve().parents[2]


def test_config_reference_is_generated_from_the_schema() -> None:
    page = (REPO / "docs" / "config.md").read_text(encoding="utf-8")
    assert page == render(job_config_schema()), (
        "run: python -m shardflow.configdoc > docs/config.md"
    )


def test_schema_file_for_editors_is_current() -> None:
    committed = json.loads((REPO / "docs" / "shardflow.schema.json").read_text(encoding="utf-8"))
    assert committed == job_config_schema(), "run: shardflow schema > docs/shardflow.schema.json"


def test_every_relative_link_in_the_docs_resolves() -> None:
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(REPO)} -> {target}")
    assert broken == []


def test_readme_quickstart_has_exactly_the_two_commands_ci_uses() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Quickstart", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    commands = [ln for ln in block.splitlines() if ln.strip() and not ln.startswith("#")]
    assert len(commands) == 2
    assert commands[0].endswith("shardflow run examples/quickstart/job.yaml")
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert commands[1].strip() in ci.replace(" -p no:cacheprovider", "")
