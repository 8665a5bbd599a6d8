"""Every citation of the architecture document names a section that exists.

Modules cite it as ``docs/architecture.md, "<section>"`` (the citation may wrap across lines
inside a docstring); the section must be one of the document's headings, so renaming a
heading without following its citations fails here.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DOC = REPO_ROOT / "docs" / "architecture.md"
CITATION = re.compile(r'docs/architecture\.md,\s+"([^"]+)"')
# Built from parts so this file does not itself mention the old document.
OLD_DOC = "DESIGN" + ".md"


def _headings() -> set[str]:
    return {
        m.group(1).strip()
        for m in re.finditer(r"^#{1,6} +(.+)$", DOC.read_text(encoding="utf-8"), re.M)
    }


def _tracked_text_files() -> list[Path]:
    names = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    wanted = (".py", ".md", ".toml", ".txt", ".yml", ".yaml", ".js", ".html")
    return [REPO_ROOT / n for n in names if n.endswith(wanted) and (REPO_ROOT / n).is_file()]


def _citations() -> list[tuple[str, str]]:
    found = []
    for path in _tracked_text_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for m in CITATION.finditer(text):
            found.append((str(path.relative_to(REPO_ROOT)), " ".join(m.group(1).split())))
    return found


def test_every_citation_names_an_existing_section() -> None:
    headings = _headings()
    missing = [
        (path, section)
        for path, section in _citations()
        if section not in headings and section != "<section>"  # the form, spelled out
    ]
    assert missing == []


def test_the_metric_maths_cite_the_document() -> None:
    cited = {path for path, _ in _citations()}
    assert {
        "shared/metrics/calibration.py",
        "shared/metrics/selective.py",
        "shared/drift/stats.py",
        "shared/contracts/topics.py",
    } <= cited


def test_no_module_points_at_a_document_the_repository_lacks() -> None:
    stale = [
        str(p.relative_to(REPO_ROOT))
        for p in _tracked_text_files()
        if OLD_DOC in p.read_text(encoding="utf-8", errors="replace")
    ]
    assert stale == []


def test_the_document_has_the_sections_the_code_relies_on() -> None:
    assert {
        "Shape",
        "Topics",
        "Owners of tables and key spaces",
        "Metric definitions",
        "Reliability rules",
        "Why a batch consumer inside a Faust app",
        "The wings of shared",
    } <= _headings()
