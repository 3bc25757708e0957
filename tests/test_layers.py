"""The library's floors (DESIGN.md, "Layers"): nothing imports upward, nothing forms a cycle.

Every import of every module under pedagogy_lib/ is read from its source (including imports
inside functions), mapped to a floor, and checked: a module may import its own floor or the
floors below, with no exception. A cycle among the modules is refused too, whatever their floors.

Inside the top floor, ``book/``: the shared book-level modules (``rules``, ``sentences``,
``claims``, ``figures``, ``exercises``, ``diagrams``, ``evidence/``) sit below the rooms
(``book/chNN/``) and import no room; a room imports shared modules and its own room only. What
a room needs from another chapter it reads through ``book.evidence`` (stored results).
"""
import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LIB = ROOT / "pedagogy_lib"

# floor 0 is the ground: bottom to top, as in DESIGN.md
FLOORS = [
    {"nn", "quant", "checks", "counting", "gradcheck", "show", "results", "stats", "scaling", "peft_format"},
    {"lowrank", "lora", "dora", "adapters", "prefix", "prompt", "bitfit", "ia3", "decoder", "decoder_prefix", "bert"},
    {"data", "checkpoint", "corpus", "bpe", "decoder_io", "decoder_tasks"},
    {"torch_ref", "models", "peft_io", "export"},  # models: the API that picks NumPy or torch
    {"registry", "runner", "benchmarks", "distributed"},
    {"book"},
]


def floor_of(module: str) -> int:
    """pedagogy_lib.a.b -> the floor of 'a' (a new top-level module must be given a floor)."""
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else ""
    for i, names in enumerate(FLOORS):
        if top in names:
            return i
    raise KeyError(f"{module}: put {top!r} on a floor in tests/test_layers.py::FLOORS (and in README.md's Layout)")


def module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: pathlib.Path) -> set[str]:
    """The pedagogy_lib modules ``path`` imports (absolute, relative, and inside functions)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "pedagogy_lib"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "pedagogy_lib":
                continue
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names if (LIB.parent / f"{mod}.{a.name}".replace(".", "/")).exists()
                    or (LIB.parent / (f"{mod}.{a.name}".replace(".", "/") + ".py")).exists()}
    return out - {name, "pedagogy_lib"}  # the package itself: a docstring and a version


def graph() -> dict[str, set[str]]:
    mods = {module_name(p): p for p in LIB.rglob("*.py")}
    return {m: {i for i in imports_of(p) if i in mods} for m, p in mods.items()}


def upward(g) -> list[str]:
    return sorted(f"{m} (floor {floor_of(m)}) imports {i} (floor {floor_of(i)})"
                  for m, deps in g.items() for i in deps
                  if floor_of(i) > floor_of(m))


def cycles(g) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_floor():
    for m in graph():
        if m != "pedagogy_lib":
            floor_of(m)


def test_nothing_imports_upward():
    assert upward(graph()) == []


def test_no_import_cycles():
    assert cycles(graph()) == []


def top_level_imports(module: str) -> set[str]:
    """Every module a file imports at its top level (not inside a function): what importing it costs."""
    tree = ast.parse((LIB.parent / (module.replace(".", "/") + ".py")).read_text())
    out = set()
    for n in tree.body:
        if isinstance(n, ast.Import):
            out |= {a.name for a in n.names}
        elif isinstance(n, ast.ImportFrom):
            out.add(("." * n.level) + (n.module or ""))
    return out


def test_no_exception_list():
    """Nothing is allowed to run upward by name: no set of (importer, imported) pairs in this file."""
    pairs = [k for k, v in globals().items() if isinstance(v, (set, frozenset, dict, list, tuple)) and v
             and all(isinstance(x, tuple) and len(x) == 2 and all(str(y).startswith("pedagogy_lib") for y in x)
                     for x in v)]
    assert pairs == []
    assert list(__import__("inspect").signature(upward).parameters) == ["g"]


def test_importing_models_imports_no_torch_and_twins_import_no_presentation():
    """``models`` picks the backend on the twins' floor, but its NumPy route stays torch-free:
    the torch loader is imported inside the call that asks for it (tests/test_decoder_io.py runs it)."""
    top = top_level_imports("pedagogy_lib.models")
    assert not any("torch" in i for i in top), top
    for m, deps in graph().items():
        if m.startswith("pedagogy_lib.torch_ref"):
            assert not any(i.startswith(("pedagogy_lib.book", "pedagogy_lib.runner", "pedagogy_lib.registry"))
                           for i in deps), m


# ------------------------------------------------------------- the book: shared modules, then rooms
ROOM = re.compile(r"^pedagogy_lib\.book\.(ch\d\d)(\.|$)")


def room_of(module: str) -> str | None:
    """'ch05' for pedagogy_lib.book.ch05[.x]; None for a shared book module or anything else."""
    m = ROOM.match(module)
    return m.group(1) if m else None


def across_rooms(g) -> list[str]:
    """Every import of a room from outside it: by another room, or by a shared module."""
    return sorted(f"{m} imports {i}" for m, deps in g.items() for i in deps
                  if room_of(i) is not None and room_of(i) != room_of(m))


def gatherers() -> set[str]:
    """The book modules that import rooms by name at run time (``importlib``): the ledger
    (``book.claims``) and ``make figures`` (``book.__main__``) walk every chapter."""
    return {module_name(p) for p in (LIB / "book").rglob("*.py") if "import_module(" in p.read_text()}


def test_rooms_import_no_other_room_and_shared_modules_no_room():
    assert across_rooms(graph()) == []


def test_nothing_imports_the_gatherers():
    """A module that walks the rooms by name sits above them: no room (nor anything else in the
    library) may import it, or the walk would run in a cycle."""
    found = gatherers()
    assert found >= {"pedagogy_lib.book.claims", "pedagogy_lib.book.__main__"}, found
    assert sorted(f"{m} imports {i}" for m, deps in graph().items() for i in deps if i in found) == []


def test_the_room_check_catches_a_cross_room_import():
    g = {"pedagogy_lib.book.ch05.claims": {"pedagogy_lib.book.ch08.table", "pedagogy_lib.book.ch05.experiment",
                                           "pedagogy_lib.book.sentences", "pedagogy_lib.book.evidence.ch08"},
         "pedagogy_lib.book.sentences": {"pedagogy_lib.book.ch10", "pedagogy_lib.book.evidence.ch10"},
         "pedagogy_lib.book.evidence.ch10": {"pedagogy_lib.results"}}
    assert across_rooms(g) == ["pedagogy_lib.book.ch05.claims imports pedagogy_lib.book.ch08.table",
                               "pedagogy_lib.book.sentences imports pedagogy_lib.book.ch10"]
    assert room_of("pedagogy_lib.book.ch10") == "ch10" and room_of("pedagogy_lib.book.evidence.ch10") is None


def test_chapter_08_room_reads_through_the_shared_readers():
    """``ch08.experiment.load`` and ``ch08.table.judged`` are ``book.evidence.ch08``'s, not copies."""
    from pedagogy_lib.book.ch08 import experiment, table
    from pedagogy_lib.book.evidence import ch08

    assert experiment.load is ch08.load and table.judged is ch08.judged and experiment.RESULTS == ch08.RESULTS


def test_the_checks_catch_an_upward_import_and_a_cycle():
    g = {"pedagogy_lib.nn": {"pedagogy_lib.runner"}, "pedagogy_lib.runner": {"pedagogy_lib.nn"},
         "pedagogy_lib.lora": set()}
    assert upward(g) == ["pedagogy_lib.nn (floor 0) imports pedagogy_lib.runner (floor 4)"]
    assert cycles(g) == [["pedagogy_lib.nn", "pedagogy_lib.runner"]]
    with pytest.raises(KeyError, match="floor"):
        floor_of("pedagogy_lib.newthing")


def test_relative_imports_are_resolved(tmp_path):
    # `from ..lora import x` in pedagogy_lib/torch_ref/lora.py names pedagogy_lib.lora
    assert "pedagogy_lib.lora" in imports_of(LIB / "torch_ref" / "lora.py")
    assert "pedagogy_lib.torch_ref.encoder" in imports_of(LIB / "runner.py")


def test_every_chapter_checker_is_guarded():
    """Each book/chNN/exercises.py wraps its check_* with guard (malformed answer -> NotYet)."""
    import importlib

    for path in sorted(LIB.glob("book/ch*/exercises.py")):
        mod = importlib.import_module(module_name(path))
        checks = [n for n, f in vars(mod).items() if n.startswith("check_") and callable(f)]
        assert checks, path
        assert all(getattr(getattr(mod, n), "_guarded", False) for n in checks), path
