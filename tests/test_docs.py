"""The user's manual holds: every repository path README.md and docs/*.md cite exists.

What counts as a cited path (kept narrow so that outputs, URIs and placeholders are not paths):
- in inline code (`...`) and fenced code blocks, a whitespace-separated token made only of
  letters, digits and `_ . / -` (so `s3://...`, `<out>/x`, `shard-*.parquet`, `$USER` are not
  paths; nor is `configs/<name>.yaml`) whose first component is a top-level name of this repository (`pipeline/`, `jobs/`,
  `tests/`, `docs/`, `bench/`, `configs/`, `deploy/`, `cluster.yaml`, ...): `demo_out/...`,
  `runs/...`, `parts/` name outputs and are not checked;
- in inline code only, a bare file name ending in .py, .md, .yaml, .yml or .sh (`DATA.md`,
  `schedule.py`), which must be the name of some tracked file;
- the target of a Markdown link or image, `[text](target)`, without a scheme or `#` anchor,
  relative to the citing file, as Markdown resolves it.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^```.*?^```", re.S | re.M)
CODE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")
TOKEN = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_./-]*")
BARE = re.compile(r"[A-Za-z0-9_.-]+\.(py|md|yaml|yml|sh)")

def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True)
    return [name for name in out.stdout.split("\0") if name]


def top_level() -> set[str]:
    return {name.split("/", 1)[0] for name in tracked_files()}


def cited_paths(doc: Path, text: str, tops: set[str]) -> list[tuple[str, Path]]:
    """(as cited, where it must exist) for every path `doc` cites."""
    found: list[tuple[str, Path]] = []
    names = {Path(name).name: name for name in tracked_files()}  # a bare name: some tracked file's

    def repo_tokens(span: str) -> None:
        for token in span.split():
            token = token.strip("()[],;:.\"'")
            if TOKEN.fullmatch(token) and token.split("/", 1)[0] in tops:
                found.append((token, ROOT / token))

    for block in FENCE.findall(text):
        repo_tokens(block)
    prose = FENCE.sub("", text)
    for span in CODE.findall(prose):
        repo_tokens(span)
        name = span.strip()
        if BARE.fullmatch(name) and name not in tops:
            found.append((name, ROOT / names.get(name, name)))
    for target in LINK.findall(prose):
        if "://" in target or target.startswith(("#", "mailto:")):
            continue
        found.append((target, doc.parent / target.split("#", 1)[0]))
    return found


def test_the_rules_tell_repository_paths_from_outputs_uris_and_placeholders(tmp_path):
    doc = ROOT / "docs" / "X.md"
    text = ("`pipeline/model/rollout.py`, `s3://bucket/x.pt`, `<infer out>/plots/<id>.png`, "
            "`demo_out/data/`, `clips/shard-*.parquet`, `DATA.md`, `python -m jobs.train --config configs/debug.yaml`"
            " [pic](images/a.png) [web](https://example.com/a.md)\n```\nkubectl apply -f deploy/kuberay/x.yaml\n```\n")
    assert sorted(c for c, _ in cited_paths(doc, text, top_level())) == sorted(
        ["pipeline/model/rollout.py", "DATA.md", "configs/debug.yaml", "images/a.png", "deploy/kuberay/x.yaml"])


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_path_the_docs_cite_exists(doc):
    missing = [cited for cited, where in cited_paths(doc, doc.read_text(), top_level()) if not where.exists()]
    assert not missing, f"{doc.relative_to(ROOT)} cites paths that do not exist: {missing}"
