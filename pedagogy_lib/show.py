"""Show library code inside a chapter without pasting it a second time.

A chapter calls ``show_source(lora.LoRALinear.forward)`` and the reader sees the exact
code the later cells run.  The header names the file by its module path, never by line
numbers, so the printed text only changes when the code itself changes (nbval compares it).
"""

import functools
import inspect
import sys

__all__ = ["show_source"]


def _unwrap(obj):
    """Return the function behind a property/staticmethod/classmethod/bound method, a
    ``functools.cached_property`` or a caching wrapper (``functools.lru_cache``: its source is
    the decorated function's, decorator line included)."""
    if isinstance(obj, functools.cached_property):
        return obj.func
    if not (inspect.isfunction(obj) or inspect.isclass(obj)) and inspect.isfunction(getattr(obj, "__wrapped__", None)):
        return obj.__wrapped__
    if isinstance(obj, property):
        if obj.fget is None:
            raise TypeError("show_source: property has no getter to show")
        return obj.fget
    if isinstance(obj, (staticmethod, classmethod)) or inspect.ismethod(obj):
        return obj.__func__
    return obj


def _file_label(obj) -> str:
    """'pedagogy_lib/nn.py' from the module name, so it is the same on every machine."""
    name = getattr(obj, "__module__", None) or "__main__"
    module = sys.modules.get(name)
    if module is None or not getattr(module, "__file__", None):
        return name  # a notebook cell or an interactive session: no file to name
    path = name.replace(".", "/")
    return path + ("/__init__.py" if module.__file__.endswith("__init__.py") else ".py")


def show_source(*objs) -> None:
    """Print, for each function, class or method, a header line and its exact source.

    Header: ``# pedagogy_lib/<file>.py :: <qualname>``.  Objects are separated by one
    blank line.  Raises TypeError (before printing anything) for objects that have no
    Python source, e.g. a builtin, a module, an instance, or nothing at all.
    """
    if not objs:
        raise TypeError("show_source() needs at least one function, class or method")
    blocks = []
    for obj in objs:
        fn = _unwrap(obj)
        if isinstance(fn, functools.partial):
            raise TypeError(f"show_source(): a functools.partial has no source of its own; show its "
                            f"function, {fn.func!r:.60} (.func)")
        if not (inspect.isfunction(fn) or inspect.isclass(fn)):
            raise TypeError(f"show_source() shows functions, classes and methods; got {type(obj).__name__} {obj!r:.60}")
        try:
            source = inspect.getsource(fn)
        except (OSError, TypeError) as err:
            raise TypeError(f"show_source(): no source available for {fn.__qualname__}: {err}") from None
        blocks.append(f"# {_file_label(fn)} :: {fn.__qualname__}\n" + source.rstrip("\n"))
    print("\n\n".join(blocks))
