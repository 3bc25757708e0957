"""`make html` / `make html-student`: the book as a static site, checked in a real browser.

The site is built from the committed chapters (nothing executed) into a temporary folder.
Every page is then opened in a headless Chromium (tests/html_browser.py): a MathJax error,
a formula left untypeset, raw TeX in the text or an image that does not decode fails the
test.  Where no Chromium can be found the browser test is SKIPPED with a loud reason (and
`make test` says so before it starts); `make test` installs one as root with apt-get.
"""
import html
import os
import pathlib
import re
import shutil
import subprocess
import sys
import warnings

import nbformat
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import html_browser  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHAPTERS = sorted(ROOT.glob("chapters/[0-9]*.ipynb"))
NO_BROWSER = ("NO HEADLESS BROWSER: the html pages were NOT checked for MathJax errors or broken "
              "images. Install one (as root on Debian/Ubuntu: apt-get install chromium-headless-shell) "
              "or set CHROMIUM=/path/to/chromium")


def build_site(tmp: pathlib.Path, edition: str) -> pathlib.Path:
    """`make html-site` for one edition into tmp; returns the site folder."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    out = tmp / edition / "site"
    r = subprocess.run(
        ["make", "-C", str(ROOT), "--no-print-directory", "html-site", f"EDITION={edition}",
         f"HTML_SRC={tmp / edition / 'src'}", f"HTML_OUT={out}", f"HTML_DOCTREES={tmp / edition / 'doctrees'}",
         f"PY={sys.executable}"],
        capture_output=True, text=True, env=env,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return build_site(tmp_path_factory.mktemp("html"), "teacher")


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    return build_site(tmp_path_factory.mktemp("html"), "student")


@pytest.fixture(scope="module")
def browser():
    program = html_browser.find_browser()
    if program is None:
        warnings.warn(NO_BROWSER)
        pytest.skip(NO_BROWSER)
    return program


def solution_lines(path) -> list[list[str]]:
    """For every `solution` cell, its code lines that appear nowhere else in the chapter (no
    other cell's source, no output: a chapter may print library code that the solution repeats)."""
    nb = nbformat.read(path, as_version=4)
    texts = [c.source for c in nb.cells if "solution" not in c.metadata.get("tags", [])]
    texts += [o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
              for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    other = {line.strip() for text in texts for line in text.splitlines()}
    return [[line.strip() for line in c.source.splitlines() if len(line.strip()) > 12 and line.strip() not in other]
            for c in nb.cells if "solution" in c.metadata.get("tags", [])]


def visible_text(page: pathlib.Path) -> str:
    """The page's text without tags (highlighted code is split into many <span>s)."""
    return html.unescape(re.sub(r"<[^>]+>", "", page.read_text(encoding="utf-8")))


def png_outputs(path) -> int:
    nb = nbformat.read(path, as_version=4)
    return sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def html_text(path: pathlib.Path) -> str:
    return path.read_text(encoding="utf-8")


# ---- the site itself --------------------------------------------------------------------


def test_teacher_site_has_every_chapter_search_bibliography_and_offline_mathjax(teacher):
    pages = {p.name for p in teacher.glob("*.html")}
    assert {f"{p.stem}.html" for p in CHAPTERS} <= pages
    assert {"index.html", "intro.html", "bibliography.html", "search.html"} <= pages
    assert (teacher / "searchindex.js").is_file()
    assert (teacher / "_static" / "mathjax" / "tex-chtml.js").is_file()  # bundled, not a CDN
    for page in teacher.glob("*.html"):
        loaded = re.findall(r'<(?:script|img|link)[^>]+(?:src|href)="(https?://[^"]+)"', html_text(page))
        assert loaded == [], f"{page.name} loads {loaded[:3]} from the network"
    toc = (teacher.parent / "src" / "_toc.yml").read_text()
    assert [f"file: {p.stem}" in toc for p in CHAPTERS] == [True] * len(CHAPTERS)


def test_every_figure_of_every_chapter_is_in_the_site(teacher):
    for path in CHAPTERS:
        imgs = re.findall(r'<img [^>]*src="(_images/[^"]+)"', html_text(teacher / f"{path.stem}.html"))
        assert len(imgs) == png_outputs(path), path.name
        assert all((teacher / src).is_file() for src in imgs)


def test_bibliography_lists_every_entry_of_references_bib(teacher):
    keys = re.findall(r"^@\w+\{([^,]+),", (ROOT / "chapters" / "references.bib").read_text(), re.MULTILINE)
    page = html_text(teacher / "bibliography.html")
    assert len(keys) >= 20
    assert page.count('role="doc-biblioentry"') == len(keys)
    assert "low-rank adaptation of large language models" in page.lower() and "2106.09685" in page


def test_teacher_hides_solutions_behind_a_toggle_and_student_has_none(teacher, student):
    config = (ROOT / "chapters" / "_config.yml").read_text()
    assert ".tag_solution" in re.search(r"togglebutton_selector:(.*)", config)[1]
    for path in CHAPTERS:
        solutions = solution_lines(path)
        assert solutions and all(solutions), f"{path.name}: a solution cell with nothing of its own"
        t_html = html_text(teacher / f"{path.stem}.html")
        t, s = visible_text(teacher / f"{path.stem}.html"), visible_text(student / f"{path.stem}.html")
        assert t_html.count('class="cell tag_solution') == len(solutions)
        assert 'class="cell tag_solution' not in html_text(student / f"{path.stem}.html")
        for lines in solutions:
            assert all(line in t for line in lines), (path.name, lines)
            assert not any(line in s for line in lines), (path.name, lines)  # no solution code
        assert "NotImplementedError" in s  # the stubs and checkers are still there
        nb = nbformat.read(student.parent / "src" / path.name, as_version=4)
        assert all("solution" not in c.metadata.get("tags", []) for c in nb.cells)
        assert any(c.get("outputs") for c in nb.cells if c.cell_type == "code")  # outputs kept


# ---- in a real browser ------------------------------------------------------------------


def test_no_browser_means_a_loud_skip_not_a_pass(monkeypatch):
    monkeypatch.setenv("CHROMIUM", "/nonexistent/chromium")
    assert html_browser.find_browser() is None
    assert "NOT checked" in NO_BROWSER and "apt-get install chromium-headless-shell" in NO_BROWSER


def test_every_page_renders_its_maths_and_images_in_a_browser(browser, teacher):
    reports = html_browser.check_site(teacher, browser)
    assert len(reports) >= len(CHAPTERS) + 2  # the chapters, intro and bibliography
    bad = {page: html_browser.problems(r) for page, r in reports.items() if html_browser.problems(r)}
    assert bad == {}
    for path in CHAPTERS:  # the maths was there and typeset, and the figures decoded
        r = reports[f"{path.stem}.html"]
        assert r["mathjax"] and r["math"] > 0 and r["rendered"] >= r["math"], path.name
        assert r["images"] == png_outputs(path)


BROKEN = r"""<p>split with a tag: <span class="math notranslate nohighlight">\(\begin{split}a \\ b \tag{9.9}\end{split}\)</span></p>
<p>display math read as inline: $<span class="math notranslate nohighlight">\(x = 1 \tag{9.8}\)</span>$</p>
<p>raw: y = 2 \tag{9.7}</p>
<img src="_images/does-not-exist.png" alt="missing">
<img src="data:image/png;base64,bm90IGEgcG5n" alt="not a png">"""


def test_the_browser_check_fails_on_maths_errors_and_broken_images(browser, teacher, tmp_path):
    site = tmp_path / "site"
    shutil.copytree(teacher / "_static", site / "_static")
    page = html_text(teacher / "intro.html")
    article = re.search(r'<article class="bd-article">', page)
    assert article, "the theme's article element moved"
    (site / "zz_broken.html").write_text(page[: article.end()] + BROKEN + page[article.end():], encoding="utf-8")
    shutil.copy(teacher / "intro.html", site / "intro.html")
    reports = html_browser.check_site(site, browser)
    assert html_browser.problems(reports["intro.html"]) == []
    found = html_browser.problems(reports["zz_broken.html"])
    assert any("MathJax error" in p and "tag" in p for p in found), found
    assert any("$ around" in p for p in found), found
    assert any("raw TeX" in p and "tag{9.7}" in p for p in found), found
    assert sum(p.startswith("broken image") for p in found) == 2, found
