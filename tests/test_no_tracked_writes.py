"""Running the chapters or `make test` writes no tracked file (BRIEF, "Determinism").

Only `make book/figures/sweeps/compare/bench/pretrain` write under chapters/results/ and
figures/. Three checks:

1. No chapter code cell calls a library function that writes results or figures. Which
   functions those are is derived, not listed: an AST pass over ``pedagogy_lib`` finds every
   function that calls, directly or through other library functions, one of the two
   primitives that write into the checkout (``results._write``, under ``results.save`` and
   ``results.save_runs``; ``book.figures.save``). A function that writes raw files itself
   must be one of those primitives or a reviewed writer to a folder its caller names
   (``PATH_WRITERS``), so a new raw writer fails here until someone decides which it is.
2. Every figure builder, run as `make figures` runs it (no data: the stored results), leaves
   chapters/results/ and figures/ byte for byte as they were and never calls ``figures.save``.
3. End to end: tests/git_guard.py (registered in tests/conftest.py) fails the whole session
   if ``git status --porcelain`` (and the content of every dirty path) differs after it;
   ``test_the_session_guard_fails_a_writing_session`` shows that it does.
"""
import ast
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
from functools import lru_cache

import pytest

import git_guard

ROOT = pathlib.Path(__file__).resolve().parents[1]
LIB = ROOT / "pedagogy_lib"
CHAPTERS = sorted((ROOT / "chapters").glob("[0-9]*.ipynb"))

# The library functions that write into the checkout; every other writer reaches one of them.
PRIMITIVES = {"pedagogy_lib.results._write", "pedagogy_lib.book.figures.save"}
# Functions that write files only into a folder their caller gives (a temporary one in the
# chapters; pedagogy_lib/checkpoints/ only through `make pretrain`), reviewed one by one.
PATH_WRITERS = {
    "pedagogy_lib.checks.write_atomically",  # the atomic write itself: {path: bytes} given
    "pedagogy_lib.peft_io._write_adapter",  # under peft_io.save_adapter(model, folder)
    "pedagogy_lib.export.export_merged",
    "pedagogy_lib.decoder_io.write_checkpoint",
    "pedagogy_lib.bpe.save_tokenizer",
    "pedagogy_lib.distributed._save",  # a rank's output folder
    "pedagogy_lib.distributed._entry",
    "pedagogy_lib.runner.run_log",  # the resumable log of a sweep, at the path given
    "pedagogy_lib.book.ch05.experiment._log",  # build/ch05_runs.jsonl: build/ is ignored by git
}
RAW_WRITES = {"write_text", "write_bytes", "savefig", "save_file", "write_atomically", "savez", "savez_compressed"}


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _aliases(tree: ast.AST, module: str, is_package: bool) -> dict:
    """{local name: dotted name it stands for} from every import in ``tree`` (lazy ones too)."""
    package = module if is_package else module.rpartition(".")[0]
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                out[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([node.module] if node.module else []))
            for a in node.names:
                out[a.asname or a.name] = f"{base}.{a.name}"
    return out


def _dotted(expr: ast.AST, aliases: dict, local: dict) -> str | None:
    """The dotted name an expression like ``E10.protocol`` or ``save`` stands for, or None."""
    attrs = []
    while isinstance(expr, ast.Attribute):
        attrs.append(expr.attr)
        expr = expr.value
    if not isinstance(expr, ast.Name):
        return None
    head = local.get(expr.id) or aliases.get(expr.id)
    return ".".join([head, *reversed(attrs)]) if head else None


def _is_raw_write(call: ast.Call) -> bool:
    f = call.func
    name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
    if name in RAW_WRITES:
        return True
    if name == "open" and len(call.args) > 1 and isinstance(call.args[1], ast.Constant):
        return any(m in str(call.args[1].value) for m in "wax+")
    return False


@lru_cache(maxsize=1)
def library_calls() -> tuple[dict, set]:
    """({function: set of dotted names it calls}, {functions that write raw files}) over
    pedagogy_lib; a function is ``module.name`` (a method: ``module.name`` too); calls in a
    nested function count for the function around it."""
    calls, raw = {}, set()
    for path in sorted(LIB.rglob("*.py")):
        module = _module_name(path)
        tree = ast.parse(path.read_text())
        aliases = _aliases(tree, module, path.name == "__init__.py")
        tops = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        tops += [m for c in tree.body if isinstance(c, ast.ClassDef) for m in c.body
                 if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))]
        local = {n.name: f"{module}.{n.name}" for n in tops}
        for fn in tops:
            key = f"{module}.{fn.name}"
            found = calls.setdefault(key, set())
            for node in ast.walk(fn):
                if isinstance(node, ast.Call):
                    name = _dotted(node.func, aliases, local)
                    if name:
                        found.add(name)
                    if _is_raw_write(node):
                        raw.add(key)
    return calls, raw


@lru_cache(maxsize=1)
def writers() -> frozenset:
    """Every library function that reaches a primitive writer through library calls."""
    calls, _ = library_calls()
    found = set(PRIMITIVES)
    while True:
        more = {f for f, callees in calls.items() if f not in found and callees & found}
        if not more:
            return frozenset(found)
        found |= more


def writer_calls(code: str) -> list[str]:
    """Calls in ``code`` that reach a library writer (``peft_io.save_adapter`` into a temporary
    folder is fine: it writes where it is told), or matplotlib's ``savefig``."""
    lines = [ln for ln in code.splitlines() if not ln.lstrip().startswith(("%", "!"))]
    tree = ast.parse("\n".join(lines))
    aliases, out = _aliases(tree, "__main__", False), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _dotted(node.func, aliases, {})
            plain = node.func.attr if isinstance(node.func, ast.Attribute) else None
            if name in writers() or plain == "savefig":
                out.append(ast.unparse(node.func))
    return out


def code_of(nb_path: pathlib.Path) -> str:
    nb = json.loads(nb_path.read_text())
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")


@pytest.mark.parametrize("nb", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapters_call_no_writer(nb):
    calls = writer_calls(code_of(nb))
    assert calls == [], f"{nb.name} writes results or figures: {calls}"


def test_every_raw_writer_is_reviewed():
    _, raw = library_calls()
    unknown = sorted(raw - PRIMITIVES - PATH_WRITERS - writers())
    assert unknown == [], (f"{unknown} write files: if they write into chapters/results/ or figures/, call "
                           "results.save/save_runs or figures.save; if they write where the caller says, "
                           "add them to PATH_WRITERS")
    assert PATH_WRITERS <= raw, f"reviewed writers that no longer write: {sorted(PATH_WRITERS - raw)}"


def test_the_derived_writers_include_the_known_ones():
    """Every library function that saves results or figures by name is a writer, so is every
    function that calls a writer, and chapter 10's entry points the old hand list missed (audit
    7, item 21) are found; a function that only computes is not."""
    calls, _ = library_calls()
    w = writers()
    assert {"pedagogy_lib.results.save", "pedagogy_lib.results.save_runs", "pedagogy_lib.book.__main__.main"} <= w
    savers = {f for f, callees in calls.items()
              if any(c.endswith((".results.save", ".results.save_runs", ".figures.save")) for c in callees)}
    assert len(savers) >= 10 and savers <= w      # every chapter's sweep saves through results.save
    assert all(f in w for f, callees in calls.items() if callees & w)  # closed under "calls a writer"
    import importlib

    for module, names in (("pedagogy_lib.book.ch10.experiment", ("append", "scale_study", "main")),
                          ("pedagogy_lib.book.ch10.studies", ("main",))):
        mod = importlib.import_module(module)
        for n in names:
            if callable(getattr(mod, n, None)):   # (a room may rename its entry points)
                assert f"{module}.{n}" in w, n
    # ch10's `protocol` and `vader_study` compute and return; their callers (append, main) save
    assert not {"pedagogy_lib.book.ch10.experiment.protocol", "pedagogy_lib.book.ch10.studies.vader_study",
                "pedagogy_lib.peft_io.save_adapter", "pedagogy_lib.results.load"} & w


def test_the_writer_check_can_fail():
    code = ("from pedagogy_lib import results as R\nfrom pedagogy_lib.book.ch10 import experiment as E10\n"
            "from pedagogy_lib.book.ch10.studies import main as v\nimport pedagogy_lib.peft_io\n"
            "R.save(d, 'ch01_update')\nx = 1\nE10.scale_study(tok)\nv()\nfig.savefig('a.png')\n"
            "pedagogy_lib.peft_io.save_adapter(m, tmp)\nrows.append(1)")
    assert writer_calls(code) == ["R.save", "E10.scale_study", "v", "fig.savefig"]


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


# ------------------------------------------------------------------ the session guard
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="no git program")


def _repo(path: pathlib.Path) -> pathlib.Path:
    """A fresh repository with two committed files, one ignored folder and the guard's conftest."""
    git = ["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    (path / ".gitignore").write_text("build/\n__pycache__/\n.pytest_cache/\n")
    (path / "results.json").write_text("{}\n")
    (path / "notes.txt").write_text("draft\n")
    (path / "conftest.py").write_text(
        f"import sys\nsys.path.insert(0, {str(pathlib.Path(__file__).parent)!r})\n"
        "from git_guard import TreeGuard\n\n\ndef pytest_configure(config):\n"
        "    config.pluginmanager.register(TreeGuard(config, config.rootpath), 'guard')\n")
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "start"], check=True)
    return path


def _session(repo: pathlib.Path, body: str, *args: str) -> subprocess.CompletedProcess:
    (repo / "build").mkdir(exist_ok=True)
    test = repo / "build" / "test_it.py"  # in the ignored folder: the test file itself is no write
    test.write_text("import pathlib\nHERE = pathlib.Path(__file__).parents[1]\n\n\ndef test_it():\n"
                    f"    {body}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "GIT_"))}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           *args, str(test)], cwd=repo, env=env, capture_output=True, text=True, timeout=300)


@needs_git
@pytest.mark.parametrize("body, culprit", [
    ("(HERE / 'results.json').write_text('{\"x\": 1}')", "results.json"),          # a tracked file
    ("(HERE / 'new.json').write_text('{}')", "new.json"),                           # a new, unignored one
    ("(HERE / 'notes.txt').unlink()", "notes.txt"),                                 # a deletion
])
def test_the_session_guard_fails_a_writing_session(tmp_path, body, culprit):
    repo = _repo(tmp_path)
    r = _session(repo, body)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "1 passed" in r.stdout and "tracked files written during the session" in r.stdout, r.stdout
    assert culprit in r.stdout.split("tracked files written during the session")[1], r.stdout


@needs_git
def test_the_session_guard_sees_a_file_that_was_already_dirty(tmp_path):
    """An uncommitted edit before the session, written over during it: `git status` alone says
    " M notes.txt" both times; the content digest tells them apart."""
    repo = _repo(tmp_path)
    (repo / "notes.txt").write_text("my uncommitted edit\n")
    r = _session(repo, "(HERE / 'notes.txt').write_text('overwritten')")
    assert r.returncode == 1 and "notes.txt" in r.stdout, r.stdout + r.stderr
    assert (repo / "notes.txt").read_text() == "overwritten"


@needs_git
def test_the_session_guard_passes_a_clean_session_under_xdist(tmp_path):
    """Reads, writes under ignored build/ and into tmp_path, and a dirty file left alone pass,
    with two xdist workers as in `make test` (the workers' guards stay inactive)."""
    repo = _repo(tmp_path)
    (repo / "notes.txt").write_text("my uncommitted edit\n")
    body = "(HERE / 'results.json').read_text(); (HERE / 'build' / 'scratch.txt').write_text('x')"
    r = _session(repo, body, "-n", "2", "--dist", "loadfile")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "tracked files written" not in r.stdout


@needs_git
def test_the_session_guard_reads_a_staged_rename_whole(tmp_path):
    """`git status -z` gives a rename as "R  new" then the bare old path: one entry keyed by both
    (the old path is not misread as an entry of its own); an edit to the renamed file is seen."""
    repo = _repo(tmp_path)
    subprocess.run(["git", "-C", str(repo), "mv", "notes.txt", "moved.txt"], check=True)
    snap = git_guard.snapshot(repo)
    assert [k for k in snap if k != "HEAD"] == ["R  moved.txt <- notes.txt"]
    (repo / "moved.txt").write_text("edited\n")   # now "RM": the entry changes, and is reported
    seen = git_guard.changes(snap, git_guard.snapshot(repo))
    assert seen and all("moved.txt <- notes.txt" in line for line in seen), seen


def test_the_session_guard_is_registered(request):
    """tests/conftest.py registers it in every process (it acts only in the controlling one)."""
    guard = request.config.pluginmanager.get_plugin("pedagogy-tree-guard")
    assert isinstance(guard, git_guard.TreeGuard)
    assert guard.active == (not hasattr(request.config, "workerinput"))


def test_the_session_guard_is_off_outside_a_checkout(tmp_path):
    assert git_guard.toplevel(tmp_path) is None
    assert git_guard.changes({"HEAD": "a", " M x": "1"}, {"HEAD": "a", " M x": "2"}) == ["changed: ' M x'"]
