"""Running the chapters or `make test` writes no tracked file (BRIEF, "Determinism").

Only `make book/figures/sweeps/compare/bench` write under chapters/results/ and figures/.
Two checks, both cheap: (1) no chapter code cell calls a writer of results or figures (the
experiments' ``save``/``*_study`` entry points, ``figures.save``, ``savefig``); (2) every
figure builder, run as `make figures` runs it (no data: the stored results), leaves
chapters/results/ and figures/ byte for byte as they were and never calls ``figures.save``
itself: only ``python -m pedagogy_lib.book`` does.
"""
import ast
import hashlib
import json
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("[0-9]*.ipynb"))
WRITERS = {"save", "save_runs", "save_update", "savefig", "update_study", "intrinsic_sweep", "preactivation_study",
           "step_memory_study", "learning_curve_sweep", "accuracy_sweep", "main"}


def writer_calls(code: str) -> list[str]:
    """Calls in ``code`` whose function name is one of WRITERS (``peft_io.save_adapter`` into a
    temporary directory is fine: it is not in the list)."""
    lines = [ln for ln in code.splitlines() if not ln.lstrip().startswith(("%", "!"))]
    out = []
    for node in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
            if name in WRITERS:
                out.append(ast.unparse(f))
    return out


def code_of(nb_path: pathlib.Path) -> str:
    nb = json.loads(nb_path.read_text())
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")


@pytest.mark.parametrize("nb", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapters_call_no_writer(nb):
    calls = writer_calls(code_of(nb))
    assert calls == [], f"{nb.name} writes results or figures: {calls}"


def test_the_writer_check_can_fail():
    assert writer_calls("figs.save_update(upd, acc)\nx = 1\nR.save(d, 'ch01_update')") == ["figs.save_update", "R.save"]
    assert writer_calls("peft_io.save_adapter(m, tmp)") == []


def _digest(folder: pathlib.Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_figure_builders_only_plot_stored_results(monkeypatch, tmp_path):
    import matplotlib

    matplotlib.use("agg")
    import matplotlib.pyplot as plt

    from pedagogy_lib.book import __main__ as book_main
    from pedagogy_lib.book import figures

    def refuse(*a, **k):
        raise AssertionError("a figure builder called figures.save: only `make figures` writes figures/")

    before = {d: _digest(ROOT / d) for d in ("chapters/results", "figures")}
    book_main.load_chapter_modules()
    monkeypatch.setattr(figures, "save", refuse)
    # a builder that imported `save` by name escapes the patch above, but not this one:
    monkeypatch.setattr(figures, "FIGURES_DIR", tmp_path)
    for name in sorted(figures.REGISTRY):
        fig = figures.REGISTRY[name]()
        assert isinstance(fig, matplotlib.figure.Figure), name
        plt.close(fig)
        assert list(tmp_path.iterdir()) == [], f"figure builder {name!r} saved a file"
    assert {d: _digest(ROOT / d) for d in before} == before
