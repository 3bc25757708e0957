"""Every cross-reference a reader can follow resolves.

Parses the markdown of every chapter for "Eq. N.M", "Eqs. N.M–N.K" (also "eq."/"eqs.",
"Eqs. N.M and N.K") and "chapter NN"/"chapters NN–KK", and checks that the equation is
displayed with ``\\tag{N.M}`` in chapter NN and that the chapter file exists. Also checks
that each chapter numbers its displayed equations in order (no 2.7 before 2.4) and that
every equation number is displayed once.
"""
import json
import re
from pathlib import Path

import pytest

CHAPTERS = Path(__file__).resolve().parent.parent / "chapters"

TAG = re.compile(r"\\tag\{(\d+)\.(\d+)\}")
# "Eq. 2.4", "Eqs. 0.12–0.13", "Eq. 2.4–2.5", "Eqs. 3.4 and 3.5", "eqs. 1.2-1.3"
EQ = re.compile(r"\b[Ee]qs?\.\s*(\d+)\.(\d+)(?:\s*(?:–|-|—|and|,|to)\s*(\d+)\.(\d+))?")
CHAPTER = re.compile(r"\b[Cc]hapters?\s+(\d{2})\b(?:\s*(?:–|-|—|and|,|to)\s*(\d{2})\b)?")


def markdown(nb: dict) -> str:
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")


def tags(nb: dict) -> list[tuple[int, int]]:
    """Displayed equation numbers, in the order a reader meets them."""
    return [(int(a), int(b)) for a, b in TAG.findall(markdown(nb))]


def equation_refs(text: str) -> list[tuple[int, int]]:
    """Every equation a text points at; a range names each equation inside it."""
    out = []
    for m in EQ.finditer(text):
        ch, lo = int(m.group(1)), int(m.group(2))
        if m.group(3) is None:
            out.append((ch, lo))
            continue
        ch2, hi = int(m.group(3)), int(m.group(4))
        if ch2 != ch or hi < lo:
            out += [(ch, lo), (ch2, hi)]
        else:
            out += [(ch, k) for k in range(lo, hi + 1)]
    return out


def chapter_refs(text: str) -> list[int]:
    out = []
    for m in CHAPTER.finditer(text):
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
        out += list(range(lo, hi + 1)) if hi >= lo else [lo, hi]
    return out


def chapter_number(name: str) -> int:
    return int(name[:2])


def problems(notebooks: dict[str, dict]) -> list[str]:
    """Unresolved references and out-of-order or repeated tags, across ``notebooks``
    ({file name: notebook json}). An empty list means everything resolves."""
    by_chapter = {chapter_number(n): tags(nb) for n, nb in notebooks.items()}
    bad = []
    for name, nb in sorted(notebooks.items()):
        own = by_chapter[chapter_number(name)]
        if own != sorted(own):
            bad.append(f"{name}: equations displayed out of order: {own}")
        if len(set(own)) != len(own):
            bad.append(f"{name}: an equation number is displayed twice: {own}")
        text = markdown(nb)
        for ch, k in equation_refs(text):
            if (ch, k) not in by_chapter.get(ch, []):
                bad.append(f"{name}: Eq. {ch}.{k} is not displayed with \\tag{{{ch}.{k}}} in chapter {ch:02d}")
        for ch in chapter_refs(text):
            if ch not in by_chapter:
                bad.append(f"{name}: refers to chapter {ch:02d}, which has no notebook")
    return bad


def load_all() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(CHAPTERS.glob("[0-9][0-9]_*.ipynb"))}


def test_every_reference_in_the_book_resolves():
    notebooks = load_all()
    assert notebooks, f"no chapters found in {CHAPTERS}"
    assert problems(notebooks) == []


def _nb(*markdown_cells: str) -> dict:
    return {"cells": [{"cell_type": "markdown", "source": [s]} for s in markdown_cells]}


def test_parser_reads_ranges_and_lists():
    assert equation_refs("see Eqs. 0.12–0.14 and eq. 2.5") == [(0, 12), (0, 13), (0, 14), (2, 5)]
    assert equation_refs("Eqs. 3.4 and 3.5") == [(3, 4), (3, 5)]
    assert chapter_refs("chapters 02–04, chapter 07") == [2, 3, 4, 7]


@pytest.mark.parametrize("broken, expected", [
    (_nb(r"$$a \tag{1.1}$$", "as Eq. 1.2 shows"), "Eq. 1.2 is not displayed"),
    (_nb(r"$$a \tag{1.1}$$", "see Eqs. 1.1–1.3"), "Eq. 1.2 is not displayed"),
    (_nb(r"$$a \tag{1.2}$$ $$b \tag{1.1}$$"), "out of order"),
    (_nb(r"$$a \tag{1.1}$$ $$b \tag{1.1}$$"), "displayed twice"),
    (_nb("chapter 09 explains"), "chapter 09, which has no notebook"),
    (_nb("uses Eq. 0.4"), "Eq. 0.4 is not displayed"),
])
def test_a_broken_synthetic_notebook_is_caught(broken, expected):
    ok = _nb(r"$$x \tag{0.1}$$")
    found = problems({"00_a.ipynb": ok, "01_b.ipynb": broken})
    assert any(expected in p for p in found), found
    assert problems({"00_a.ipynb": ok, "01_b.ipynb": _nb(r"$$a \tag{1.1}$$", "Eq. 1.1, chapter 00")}) == []


# ----------------------------------------------------------------------------- bibliography
BIB = CHAPTERS / "references.bib"
ENTRY = re.compile(r"@(\w+)\{([^,\s]+),(.*?)\n\}", re.S)
CITE = re.compile(r"`\[([A-Za-z0-9_-]+)\]`")
NO_IDENTIFIER = {"peftblog"}  # the article: its copy carries no address


def bib_entries(text: str) -> dict[str, str]:
    return {key: body for _, key, body in ENTRY.findall(text)}


def reference_problems(notebooks: dict[str, dict], bib_text: str) -> list[str]:
    entries = bib_entries(bib_text)
    bad = []
    for key, body in entries.items():
        if not re.search(r"\byear\s*=", body):
            bad.append(f"references.bib: {key} has no year")
        if key not in NO_IDENTIFIER and not re.search(r"\b(eprint|doi|url)\s*=", body):
            bad.append(f"references.bib: {key} has no arXiv id, DOI or URL")
    cited = set()
    for name, nb in sorted(notebooks.items()):
        sections = [c for c in nb["cells"] if c["cell_type"] == "markdown"
                    and "".join(c["source"]).startswith("## References")]
        if len(sections) != 1 or sections[0] is not nb["cells"][-1]:
            bad.append(f"{name}: needs exactly one '## References' section, as its last cell")
            continue
        keys = CITE.findall("".join(sections[0]["source"]))
        if not keys:
            bad.append(f"{name}: the References section lists no work")
        for key in keys:
            if key not in entries:
                bad.append(f"{name}: cites [{key}], which is not in references.bib")
        cited |= set(keys)
    bad += [f"references.bib: {k} is cited by no chapter" for k in sorted(set(entries) - cited)]
    return bad


def test_every_cited_work_is_in_the_bibliography_with_an_identifier():
    assert reference_problems(load_all(), BIB.read_text()) == []


def test_reference_check_catches_a_missing_entry_and_a_missing_section():
    bib = "@misc{hu2021lora,\n  year = {2021},\n  eprint = {2106.09685},\n}\n@misc{nope2020x,\n  year = {2020},\n}\n"
    found = reference_problems({"02_a.ipynb": _nb("text", "## References\n\n* `[hu2021lora]` x\n* `[li2021prefix]` y"),
                                "03_b.ipynb": _nb("no references here")}, bib)
    assert any("cites [li2021prefix], which is not in references.bib" in p for p in found), found
    assert any("03_b.ipynb: needs exactly one" in p for p in found), found
    assert any("nope2020x has no arXiv id" in p for p in found), found
