"""The end-to-end form of "running the chapters or `make test` writes no tracked file".

A pytest plugin (registered by tests/conftest.py, active only in the controlling process, not
in xdist workers): at session start it takes a snapshot of the checkout, at session finish it
takes another, and if they differ the session fails (exit status 1) and the terminal summary
names each path that changed. The snapshot is

* ``git status --porcelain`` (tracked files modified, deleted or staged; new files git does
  not ignore; ignored paths such as ``build/`` and ``.venv/`` never appear), and
* the SHA-256 of every path that line lists, so that a file already dirty when the session
  started (an engineer's uncommitted edit) cannot be overwritten unseen, and
* ``HEAD``, so that a write followed by a commit is seen too.

Outside a git checkout (a release tarball; no ``git`` program) the guard says so and does
nothing.
"""
from __future__ import annotations

import hashlib
import os
import pathlib
import subprocess

import pytest


def _git(root: pathlib.Path, *args: str) -> str:
    # --no-optional-locks: reading the status never takes the index lock (or refreshes it)
    return subprocess.run(["git", "--no-optional-locks", "-C", str(root), *args], check=True,
                          capture_output=True, text=True, timeout=120).stdout


def toplevel(root) -> pathlib.Path | None:
    """The checkout whose top level is ``root``, or None (not a git checkout, or no git)."""
    root = pathlib.Path(root).resolve()
    try:
        top = _git(root, "rev-parse", "--show-toplevel").strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return root if top and pathlib.Path(top).resolve() == root else None


def _digest(path: pathlib.Path) -> str:
    """SHA-256 of a file, a symlink's target text, or a folder's files (an untracked folder is
    listed as one line by ``git status``); "absent" for nothing."""
    if path.is_symlink():
        return "link:" + os.readlink(path)
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    if path.is_dir():
        h = hashlib.sha256()
        for p in sorted(q for q in path.rglob("*") if q.is_file()):
            h.update(str(p.relative_to(path)).encode() + b"\0" + p.read_bytes())
        return "dir:" + h.hexdigest()
    return "absent"


def snapshot(root) -> dict:
    """{line of ``git status --porcelain``: digest of its path} plus {"HEAD": commit}."""
    root = pathlib.Path(root)
    # -z: paths verbatim (no quoting), entries NUL-separated; a rename or copy (status R/C) is
    # followed by its bare source path, which is kept as part of that entry's key.
    fields = iter(e for e in _git(root, "status", "--porcelain", "-z").split("\0") if e)
    snap = {}
    for e in fields:
        key = e + " <- " + next(fields, "") if e[0] in "RC" or e[1] in "RC" else e
        snap[key] = _digest(root / e[3:])
    try:
        snap["HEAD"] = _git(root, "rev-parse", "--verify", "-q", "HEAD").strip()
    except subprocess.CalledProcessError:  # a repository with no commit yet
        snap["HEAD"] = ""
    return snap


def changes(before: dict, after: dict) -> list[str]:
    """Readable lines for every entry that appeared, went or changed content."""
    out = []
    for key in sorted(set(before) | set(after)):
        if before.get(key) != after.get(key):
            label = key if key == "HEAD" else repr(key)
            if key not in before:
                out.append(f"new:     {label}")
            elif key not in after:
                out.append(f"gone:    {label}")
            else:
                out.append(f"changed: {label}")
    return out


class TreeGuard:
    """The plugin: snapshot before the first test, compare after the last."""

    def __init__(self, config, root):
        self.active = not hasattr(config, "workerinput")  # the xdist controller (or a plain run)
        self.root = toplevel(root) if self.active else None
        self.before = None
        self.changed: list[str] = []

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session):
        if self.root is not None:
            self.before = snapshot(self.root)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session, exitstatus):
        if self.before is None:
            return
        self.changed = changes(self.before, snapshot(self.root))
        if self.changed and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    @pytest.hookimpl
    def pytest_terminal_summary(self, terminalreporter):
        if not self.active:
            return
        if self.root is None:
            terminalreporter.write_line("tracked-writes guard: not a git checkout; `git status` not compared")
        elif self.changed:
            terminalreporter.section("tracked files written during the session", red=True, bold=True)
            terminalreporter.write_line("running the chapters or the tests wrote into the checkout "
                                        "(`git status --porcelain` differs), so the session fails:")
            for line in self.changed:
                terminalreporter.write_line("  " + line)
