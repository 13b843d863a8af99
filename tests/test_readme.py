"""The README's size, its results table (drawn from the committed results file) and the
relative links of the README and the docs."""

import json
import re
from pathlib import Path

import pytest

from benchmarks import demo_results

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_README_CHARS = 12_000
DOCS = sorted([README, ROOT / "BENCHMARKS.md", ROOT / "BUILD.md",
               *(ROOT / "docs").glob("*.md")])
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.*)$", re.MULTILINE)
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def test_readme_is_short():
    size = len(README.read_text())
    assert size <= MAX_README_CHARS, f"README.md is {size:,} characters"


def test_readme_table_is_the_committed_results():
    results = json.loads((ROOT / "benchmarks" / "results" / "demo.json").read_text())
    assert demo_results.readme_table(README.read_text()) == demo_results.table_block(results)


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces -> '-'."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {anchor(h) for h in HEADING.findall(FENCE.sub("", path.read_text()))}


def relative_links(path: Path):
    for target in LINK.findall(FENCE.sub("", path.read_text())):
        if not re.match(r"[a-z]+:", target):
            yield target


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc):
    broken = []
    for target in relative_links(doc):
        file, _, fragment = target.partition("#")
        dest = (doc.parent / file).resolve() if file else doc
        if not dest.exists():
            broken.append(f"{target}: no file {dest}")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target}: no heading '#{fragment}' in {dest.name}")
    assert not broken, f"{doc.name}: " + "; ".join(broken)


def test_the_link_check_sees_a_broken_link(tmp_path):
    (tmp_path / "a.md").write_text("# Top\n[ok](#top) [bad](missing.md) [web](https://x.y)\n"
                                   "```\n[in code](nowhere.md)\n```\n")
    assert list(relative_links(tmp_path / "a.md")) == ["#top", "missing.md"]
    assert anchors(tmp_path / "a.md") == {"top"}
    assert anchor("Coming from SplatNLP: what we fixed") == "coming-from-splatnlp-what-we-fixed"
