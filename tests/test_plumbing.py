"""The plumbing every chapter uses: show_source, figures, exercise helpers, make student,
the nbval sanitize rules and the per-notebook timing report."""

import inspect
import os
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap

import matplotlib

matplotlib.use("agg")

import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import pedagogy_lib  # noqa: E402
from pedagogy_lib.book import exercises, figures  # noqa: E402
from pedagogy_lib.book.exercises import NotYet  # noqa: E402
from pedagogy_lib.show import show_source  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **env},
    )


# ---- the package ------------------------------------------------------------------------


def test_importing_the_package_and_its_plumbing_is_cheap():
    r = run_python(
        "import sys, pedagogy_lib\n"
        "assert not {'torch', 'numpy', 'matplotlib'} & set(sys.modules), 'eager import'\n"
        "import pedagogy_lib.show, pedagogy_lib.book.exercises, pedagogy_lib.book.figures\n"
        "assert 'torch' not in sys.modules, 'plumbing imports torch'\n"
        "print(pedagogy_lib.__version__)"
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == pedagogy_lib.__version__


# ---- show_source ------------------------------------------------------------------------


def test_show_source_prints_header_and_the_exact_source(capsys):
    show_source(exercises.passed)
    out = capsys.readouterr().out
    header, body = out.split("\n", 1)
    assert header == "# pedagogy_lib/book/exercises.py :: passed"
    assert body == inspect.getsource(exercises.passed)
    assert body in (ROOT / "pedagogy_lib/book/exercises.py").read_text()


def test_show_source_methods_classes_and_several_objects(tmp_path, monkeypatch, capsys):
    (tmp_path / "shown_mod.py").write_text(
        textwrap.dedent(
            """\
            class Thing:
                def method(self):
                    return 1

                @property
                def prop(self):
                    return 2

                @staticmethod
                def static():
                    return 3
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import shown_mod

    show_source(shown_mod.Thing.method, shown_mod.Thing.prop, shown_mod.Thing().method)
    blocks = capsys.readouterr().out.rstrip("\n").split("\n\n")
    assert blocks[0] == "# shown_mod.py :: Thing.method\n    def method(self):\n        return 1"
    assert blocks[1].startswith("# shown_mod.py :: Thing.prop\n    @property\n    def prop(self):")
    assert blocks[2] == blocks[0]  # a bound method shows its function
    show_source(shown_mod.Thing)
    out = capsys.readouterr().out
    assert out == "# shown_mod.py :: Thing\n" + (tmp_path / "shown_mod.py").read_text()


@pytest.mark.parametrize("bad", [len, 3, np, "pedagogy_lib.show.show_source"])
def test_show_source_rejects_objects_without_python_source(bad, capsys):
    with pytest.raises(TypeError, match="show_source"):
        show_source(exercises.passed, bad)
    assert capsys.readouterr().out == ""  # nothing half-printed


def test_show_source_needs_an_argument():
    with pytest.raises(TypeError, match="at least one"):
        show_source()


# ---- figures ----------------------------------------------------------------------------


def sample_figure():
    x = np.linspace(0.0, 1.0, 50)
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot(x, np.sin(6 * x), label="sin")
    ax.set_title("spectrum, σ_i")
    ax.legend()
    return fig


SAVE_IN_CHILD = (
    "import matplotlib; matplotlib.use('agg')\n"
    "import sys; sys.path.insert(0, 'tests')\n"
    "from test_plumbing import sample_figure\n"
    "from pedagogy_lib.book.figures import save\n"
    "print(save(sample_figure(), '99_sample'))\n"
)


def test_save_is_byte_identical_across_saves_and_processes(tmp_path, monkeypatch):
    monkeypatch.setattr(figures, "FIGURES_DIR", tmp_path / "a")
    fig = sample_figure()
    first = figures.save(fig, "99_sample")
    assert first == tmp_path / "a" / "99_sample.png"
    bytes1 = first.read_bytes()
    bytes2 = figures.save(fig, "99_sample").read_bytes()
    plt.close(fig)
    fig = sample_figure()  # a fresh figure with the same content
    bytes3 = figures.save(fig, "99_sample").read_bytes()
    plt.close(fig)
    r = run_python(SAVE_IN_CHILD, PEDAGOGY_FIGURES_DIR=str(tmp_path / "b"))
    assert r.returncode == 0, r.stderr
    assert pathlib.Path(r.stdout.strip()) == tmp_path / "b" / "99_sample.png"
    bytes4 = (tmp_path / "b" / "99_sample.png").read_bytes()
    assert bytes1[:8] == b"\x89PNG\r\n\x1a\n"
    assert bytes1 == bytes2 == bytes3 == bytes4
    assert b"Software" not in bytes1 and b"matplotlib" not in bytes1
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["99_sample.png"]  # no temp left


def test_save_rejects_bad_input(tmp_path, monkeypatch):
    monkeypatch.setattr(figures, "FIGURES_DIR", tmp_path)
    fig = sample_figure()
    with pytest.raises(TypeError, match="Figure"):
        figures.save("not a figure", "99_x")
    for bad in ("../99_x", "99_x.png", "spectra", "", "99_a b"):
        with pytest.raises(ValueError, match="figure name"):
            figures.save(fig, bad)
    with pytest.raises(TypeError, match="str"):
        figures.save(fig, 99)
    plt.close(fig)
    assert list(tmp_path.iterdir()) == []


def test_register_rejects_duplicates_but_allows_reimport(monkeypatch):
    monkeypatch.setattr(figures, "REGISTRY", {})

    def builder():
        return None

    assert figures.register("99_dup")(builder) is builder
    figures.register("99_dup")(builder)  # the same function again (module reloaded)

    def other():
        return None

    with pytest.raises(ValueError, match="already registered"):
        figures.register("99_dup")(other)
    with pytest.raises(ValueError, match="figure name"):
        figures.register("dup")
    assert figures.REGISTRY == {"99_dup": builder}


@pytest.fixture
def figures_main(tmp_path, monkeypatch):
    import pedagogy_lib.book.__main__ as main_mod

    monkeypatch.setattr(figures, "REGISTRY", {})
    monkeypatch.setattr(figures, "FIGURES_DIR", tmp_path)
    monkeypatch.setattr(main_mod, "load_chapter_modules", lambda: [])
    return main_mod


def test_figures_main_with_an_empty_registry(figures_main, capsys):
    assert figures_main.main([]) == 0
    out, err = capsys.readouterr()
    assert out == "" and "no figures registered" in err


def test_figures_main_runs_builders_by_prefix_and_closes_figures(figures_main, tmp_path, capsys):
    built = []

    for name in ("98_one", "99_two"):

        @figures.register(name)
        def builder(data=None, name=name):
            fig = sample_figure()
            built.append(fig)
            return fig

    assert figures_main.main(["99"]) == 0
    assert capsys.readouterr().out == f"{tmp_path / '99_two.png'}\n"
    assert [p.name for p in tmp_path.iterdir()] == ["99_two.png"]
    assert not plt.fignum_exists(built[0].number)
    assert figures_main.main([]) == 0
    assert capsys.readouterr().out.splitlines() == [str(tmp_path / n) for n in ("98_one.png", "99_two.png")]
    assert figures_main.main(["07_"]) == 2
    assert "no registered figure starts with '07_'" in capsys.readouterr().err


def test_figures_main_saves_what_builders_return_and_refuses_non_figures(figures_main, tmp_path):
    figures.register("99_plain")(sample_figure)  # a builder only plots; main writes the file
    assert figures_main.main([]) == 0 and (tmp_path / "99_plain.png").is_file()
    figures.REGISTRY.clear()
    figures.register("99_none")(lambda: None)
    with pytest.raises(TypeError, match="returned NoneType"):
        figures_main.main([])


def test_python_m_figures_imports_every_chapter_module(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "pedagogy_lib.book", "__no_such_figure__"],
        capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PEDAGOGY_FIGURES_DIR": str(tmp_path)},
    )
    assert r.returncode == 2, r.stderr
    assert "no registered figure starts with '__no_such_figure__'" in r.stderr
    assert list(tmp_path.iterdir()) == []


# ---- exercises --------------------------------------------------------------------------


def test_passed_prints_exactly(capsys):
    exercises.passed("00.1")
    exercises.passed("00.2", "bytes per parameter are right")
    assert capsys.readouterr().out == "✔ 00.1 passed\n✔ 00.2 passed — bytes per parameter are right\n"


def test_not_yet_is_an_assertion_error_with_the_message():
    assert issubclass(NotYet, AssertionError)
    exercises.expect(True, "never shown")
    with pytest.raises(NotYet, match="^rank must be an int$"):
        exercises.expect(False, "rank must be an int")
    with pytest.raises(TypeError, match=r"\.all\(\)"):
        exercises.expect(np.array([True, False]), "ambiguous")


def test_expect_shape_names_what_and_both_shapes():
    exercises.expect_shape(np.zeros((2, 3)), (2, 3), "W")
    exercises.expect_shape(np.zeros((5, 3)), (None, 3), "W")
    exercises.expect_shape([[1, 2, 3]], (1, 3), "nested list")
    with pytest.raises(NotYet, match=r"^delta_W has shape \(3, 2\), expected \(2, 3\)$"):
        exercises.expect_shape(np.zeros((3, 2)), (2, 3), "delta_W")
    with pytest.raises(NotYet, match=r"expected \('any', 3\)"):
        exercises.expect_shape(np.zeros(3), (None, 3), "h")
    with pytest.raises(NotYet, match="h is None.*return"):
        exercises.expect_shape(None, (3,), "h")


def test_expect_close_names_what_the_max_diff_and_where():
    want = np.arange(6.0).reshape(2, 3)
    exercises.expect_close(want + 1e-12, want, "logits")
    got = want.copy()
    got[1, 2] += 0.5
    got[0, 1] += 0.25
    with pytest.raises(NotYet) as info:
        exercises.expect_close(got, want, "logits")
    msg = str(info.value)
    assert msg.startswith("logits differs: max abs diff 0.5 at index (1, 2) (got 5.5, expected 5")
    with pytest.raises(NotYet, match=r"logits has shape \(3, 2\), expected \(2, 3\)"):
        exercises.expect_close(want.T, want, "logits")
    got[0, 0] = np.nan
    with pytest.raises(NotYet, match=r"logits is nan at index \(0, 0\), expected 0"):
        exercises.expect_close(got, want, "logits")
    with pytest.raises(NotYet, match="numbers"):
        exercises.expect_close("five", 5.0, "count")
    with pytest.raises(NotYet, match="None"):
        exercises.expect_close(None, 5.0, "count")
    exercises.expect_close(np.inf, np.inf, "overflow")  # the same infinity is equal
    exercises.expect_close(0.1 + 0.2, 0.3, "sum")  # scalars
    with pytest.raises(NotYet, match=r"at index \(\)"):
        exercises.expect_close(0.4, 0.3, "sum")
    with pytest.raises(ValueError, match="rtol"):
        exercises.expect_close(1.0, 1.0, "x", rtol=-1)


def test_expect_close_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    exercises.expect_close(torch.ones(2, requires_grad=True) * 2, np.full(2, 2.0), "grad")
    with pytest.raises(NotYet, match=r"max abs diff 1 at index \(1,\)"):
        exercises.expect_close(torch.tensor([2.0, 3.0]), np.full(2, 2.0), "grad")


def test_attempt_turns_a_stub_into_not_yet_and_passes_the_rest_through():
    def effective_rank(s):
        raise NotImplementedError  # your code here

    with pytest.raises(NotYet, match="^effective_rank still raises NotImplementedError: write your solution in the cell above$"):
        exercises.attempt(effective_rank, [1.0])
    assert exercises.attempt(lambda a, b=0: a + b, 2, b=3) == 5

    def broken(s):
        raise ValueError("real bug")

    with pytest.raises(ValueError, match="real bug"):
        exercises.attempt(broken, [1.0])
    with pytest.raises(NotYet, match="expected a function"):
        exercises.attempt(42)


def test_attempt_copies_the_arrays_inside_a_namedtuple():
    """A namedtuple of arrays reaches the student as copies: an in-place change is noted, never
    made to the caller's arrays (it used to pass through ``copy.copy``, arrays shared)."""
    from collections import namedtuple

    Factors = namedtuple("Factors", "A B")
    caller = Factors(np.ones(3), np.zeros(2))

    def scale_in_place(f):
        f.A[:] *= 2
        return f.A.sum()

    exercises._MUTATED.clear()
    assert exercises.attempt(scale_in_place, caller) == 6.0
    assert np.array_equal(caller.A, np.ones(3)) and exercises.changed_inputs() == ["argument 1"]
    exercises._MUTATED.clear()


# ---- make student -----------------------------------------------------------------------


def exercise_notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    stub = nbformat.v4.new_code_cell("def double(x):\n    raise NotImplementedError  # your code here")
    solution = nbformat.v4.new_code_cell("def double(x):\n    return 2 * x", metadata={"tags": ["solution"]})
    check = nbformat.v4.new_code_cell("print(double(2))", execution_count=3)
    check.outputs = [nbformat.v4.new_output("stream", name="stdout", text="4\n")]
    other = nbformat.v4.new_code_cell("1 + 1", metadata={"tags": ["nbval-ignore-output"]})
    nb.cells = [nbformat.v4.new_markdown_cell("**Exercise.** Write `double`."), stub, solution, check, other]
    return nb


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_student_strips_solution_cells_and_outputs(tmp_path):
    src = tmp_path / "chapters" / "00_tiny.ipynb"
    src.parent.mkdir()
    nbformat.write(exercise_notebook(), src)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    r = subprocess.run(
        ["make", "-C", str(ROOT), "--no-print-directory", "student-copies",
         f"CHAPTERS={src}", f"STUDENT_DIR={tmp_path / 'student'}", f"PY={sys.executable}"],
        capture_output=True, text=True, env=env,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    out = nbformat.read(tmp_path / "student" / "00_tiny.ipynb", as_version=4)
    sources = [c.source for c in out.cells]
    assert sources == [c.source for i, c in enumerate(exercise_notebook().cells) if i != 2]
    assert all("solution" not in c.metadata.get("tags", []) for c in out.cells)
    code = [c for c in out.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    assert code[2].metadata["tags"] == ["nbval-ignore-output"]  # other tags stay
    assert nbformat.read(src, as_version=4).cells[3].outputs  # the chapter itself is untouched


# ---- nbval: sanitize rules and the per-notebook wall time -------------------------------


def test_sanitize_rules():
    from nbval.plugin import get_sanitize_patterns

    rules = get_sanitize_patterns((ROOT / "tests" / "nbval_sanitize.cfg").read_text())
    assert len(rules) >= 5

    def sanitize(s):
        for regex, replace in rules:
            s = re.sub(regex, replace, s)
        return s

    assert sanitize("<object object at 0x7f3a2b1c>") == "<object object at 0xADDRESS>"
    assert sanitize("loss 0.693147 vs 0.69314999") == "loss 0.6931 vs 0.6931"
    assert sanitize("-0.00001 and 0.00001") == "0.0000 and 0.0000"
    assert sanitize("-0.00017") == "-0.0001"
    assert sanitize("took 1.234 s, 12 ms each, 3.5it/s") == "took T s, T ms each, T it/s"
    assert sanitize("elapsed 2.5") == "elapsed T"
    for stable in ("<Figure size 640x480 with 1 Axes>", "rank 4, 12 steps, 3 seeds", "98.7%"):
        assert sanitize(stable) == stable


def test_notebook_wall_time_is_reported_under_xdist(tmp_path):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print(6 * 7)", execution_count=1)
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="42\n")]
    nb.cells = [nbformat.v4.new_code_cell("x = 1", execution_count=None), cell]
    nbformat.write(nb, tmp_path / "00_tiny.ipynb")
    nbformat.write(nb, tmp_path / "01_tiny.ipynb")
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "conftest", "-n", "2", "--dist", "loadfile",
         "--nbval", "--nbval-current-env", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
         str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)]),
             "OMP_NUM_THREADS": "1"},
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "4 passed" in r.stdout
    section = r.stdout.split("notebook wall time", 1)[1].splitlines()
    rows = [line.split() for line in section if line.endswith(" s") and "ipynb" in line]
    assert [row[0] for row in rows] == ["00_tiny.ipynb", "01_tiny.ipynb"]
    assert all(float(row[1]) > 0.1 for row in rows)  # includes the kernel's start-up


def test_figures_command_has_a_help_and_refuses_an_option_before_drawing(capsys):
    # `python -m pedagogy_lib.book --help` printed "no registered figure starts with '--help'"
    from pedagogy_lib.book import __main__ as make_figures

    with pytest.raises(SystemExit) as e:
        make_figures.main(["--help"])
    assert e.value.code == 0 and "prefixes" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        make_figures.main(["--out", "x"])
    assert e.value.code == 2
