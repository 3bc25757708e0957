"""What a reader sees in a chapter: no bare asserts in the code they read, no private
bookkeeping tags, no library noise in the committed outputs."""
import json
import re
from pathlib import Path

import pytest

CHAPTERS = sorted((Path(__file__).resolve().parent.parent / "chapters").glob("[0-9][0-9]_*.ipynb"))
PRIVATE = re.compile(r"paper-numbers|◐|✘|\bA\d ✔|formats-and-lessons")
NOISE = ("pip install kernels", "kernels-community")


def reader_asserts(nb: dict) -> list[str]:
    """Assert statements in code cells a reader sees (solution cells are the exercises' answers)."""
    return [line.strip() for c in nb["cells"] if c["cell_type"] == "code"
            and "solution" not in c.get("metadata", {}).get("tags", [])
            for line in "".join(c["source"]).splitlines() if re.match(r"\s*assert\b", line)]


def visible_text(nb: dict) -> str:
    parts = []
    for c in nb["cells"]:
        parts.append("".join(c["source"]))
        for o in c.get("outputs", []):
            parts.append("".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_no_reader_visible_asserts_tags_or_noise(path):
    nb = json.loads(path.read_text())
    assert reader_asserts(nb) == []
    text = visible_text(nb)
    assert PRIVATE.findall(text) == []
    assert [n for n in NOISE if n in text] == []


def test_the_scan_catches_an_assert_and_a_tag():
    nb = {"cells": [{"cell_type": "code", "metadata": {}, "source": ["x = 1\n", "  assert x == 1\n"],
                     "outputs": [{"text": "see paper-numbers.md A1 ✔"}]},
                    {"cell_type": "code", "metadata": {"tags": ["solution"]}, "source": ["assert True"]}]}
    assert reader_asserts(nb) == ["assert x == 1"]
    assert PRIVATE.findall(visible_text(nb)) == ["paper-numbers", "A1 ✔"]
