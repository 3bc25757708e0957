"""The library's floors (DESIGN.md, "Layers"): nothing imports upward, nothing forms a cycle.

Every import of every module under pedagogy_lib/ is read from its source (including imports
inside functions), mapped to a floor, and checked: a module may import its own floor or the
floors below. A cycle among the modules is refused too, whatever their floors.
"""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LIB = ROOT / "pedagogy_lib"

# floor 0 is the ground: bottom to top, as in DESIGN.md
FLOORS = [
    {"nn", "quant", "checks", "counting", "gradcheck", "show", "results", "stats", "scaling", "peft_format"},
    {"lowrank", "lora", "dora", "adapters", "prefix", "prompt", "bitfit", "ia3", "decoder", "decoder_prefix", "bert"},
    {"models", "data", "checkpoint", "corpus", "bpe", "decoder_io", "decoder_tasks"},
    {"torch_ref", "peft_io", "export"},
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
    raise KeyError(f"{module}: put {top!r} on a floor in tests/test_layers.py::FLOORS (and DESIGN.md)")


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


# The one deliberate exception: chapter 09's API ``models.load_decoder(name, backend="torch")``
# (issue 15) picks the torch twin at the caller's request. The import sits inside the function,
# so importing models (or decoder_io) never imports torch; test_backend_switches_are_lazy
# holds it to that, and nothing else may run upward.
BACKEND_SWITCHES = {("pedagogy_lib.models", "pedagogy_lib.torch_ref.decoder"),
                    ("pedagogy_lib.decoder_io", "pedagogy_lib.torch_ref.decoder")}


def upward(g) -> list[str]:
    return sorted(f"{m} (floor {floor_of(m)}) imports {i} (floor {floor_of(i)})"
                  for m, deps in g.items() for i in deps
                  if floor_of(i) > floor_of(m) and (m, i) not in BACKEND_SWITCHES)


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


def test_models_is_numpy_only_and_twins_import_no_presentation():
    g = graph()
    assert not any(i.startswith("pedagogy_lib.torch_ref") for i in g["pedagogy_lib.models"]
                   if ("pedagogy_lib.models", i) not in BACKEND_SWITCHES)
    for m, deps in g.items():
        if m.startswith("pedagogy_lib.torch_ref"):
            assert not any(i.startswith(("pedagogy_lib.book", "pedagogy_lib.runner", "pedagogy_lib.registry"))
                           for i in deps), m


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


def test_backend_switches_are_lazy():
    """The allowed backend switches import torch_ref only inside a function body."""
    for mod, target in BACKEND_SWITCHES:
        path = LIB.parent / (mod.replace(".", "/") + ".py")
        tree = ast.parse(path.read_text())
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        names = {(n.module or "") for n in top if isinstance(n, ast.ImportFrom)} | \
                {a.name for n in top if isinstance(n, ast.Import) for a in n.names}
        assert not any(target.endswith(x.lstrip(".")) and x for x in names if "torch_ref" in x), mod
        assert "torch" not in {a.name for n in top if isinstance(n, ast.Import) for a in n.names}, mod


def test_every_chapter_checker_is_guarded():
    """Each book/chNN/exercises.py wraps its check_* with guard (malformed answer -> NotYet)."""
    import importlib

    for path in sorted(LIB.glob("book/ch*/exercises.py")):
        mod = importlib.import_module(module_name(path))
        checks = [n for n, f in vars(mod).items() if n.startswith("check_") and callable(f)]
        assert checks, path
        assert all(getattr(getattr(mod, n), "_guarded", False) for n in checks), path
