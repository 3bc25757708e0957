"""``python -m pedagogy_lib.book [name-prefix ...]`` (= ``make figures``): rebuild the book's figures.

Imports every ``pedagogy_lib.book.chNN.figures`` module (which registers its builders), runs
the builders whose name starts with one of the prefixes (all when none is given),
saves and closes each figure and prints the path it was written to.
"""

import argparse
import importlib
import pkgutil
import sys

import matplotlib

matplotlib.use("agg")  # a script, not a notebook: always headless

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from tqdm import tqdm  # noqa: E402

from pedagogy_lib import book  # noqa: E402
from pedagogy_lib.book import figures  # noqa: E402


def load_chapter_modules() -> list[str]:
    """Import the pedagogy_lib.book.chNN.figures modules in sorted order; return the rooms' names."""
    names = sorted(m.name for m in pkgutil.iter_modules(book.__path__) if m.ispkg and m.name.startswith("ch"))
    for name in names:
        importlib.import_module(f"{book.__name__}.{name}.figures")
    return names


def build(names) -> list:
    """Run the named builders on their stored results; each must return a Figure, which is
    written (``figures.save``) and closed. Only this command writes figures/."""
    paths = []
    for name in tqdm(names, desc="figures", unit="fig", file=sys.stderr, disable=None):
        fig = figures.REGISTRY[name]()
        if not isinstance(fig, Figure):
            raise TypeError(f"figure builder {name!r} returned {type(fig).__name__}, not a Figure")
        try:
            paths.append(figures.save(fig, name))
        finally:
            plt.close(fig)
    return paths


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pedagogy_lib.book", description=__doc__.splitlines()[0].split(": ")[-1])
    ap.add_argument("prefixes", nargs="*", help="rebuild only the figures whose name starts with one of these")
    prefixes = ap.parse_args(argv).prefixes
    load_chapter_modules()
    names = sorted(figures.REGISTRY)
    if prefixes:
        names = [n for n in names if any(n.startswith(p) for p in prefixes)]
        if not names:
            print(f"no registered figure starts with {' or '.join(map(repr, prefixes))}", file=sys.stderr)
            return 2
    if not names:
        print("no figures registered yet", file=sys.stderr)
        return 0
    for path in build(names):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
