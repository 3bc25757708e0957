"""Shared pytest set-up: offline mode, the gpu/slow markers, per-notebook wall time, and the
guard that fails the session if it wrote into the checkout (tests/git_guard.py)."""

import os
import pathlib

# Before anything imports huggingface_hub/transformers (and inherited by nbval's kernels):
# nothing is ever downloaded.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from collections import defaultdict  # noqa: E402

import pytest  # noqa: E402

from git_guard import TreeGuard  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs CUDA; skipped when torch.cuda is unavailable")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")
    # A plugin object, not conftest hooks: conftest hooks only see items under tests/,
    # and the notebook items live in chapters/.
    if not config.pluginmanager.has_plugin("pedagogy-notebook-times"):
        config.pluginmanager.register(NotebookTimes(config), "pedagogy-notebook-times")
    # Likewise a plugin, so that its session hooks see the whole run (chapters included).
    if not config.pluginmanager.has_plugin("pedagogy-tree-guard"):
        config.pluginmanager.register(TreeGuard(config, ROOT), "pedagogy-tree-guard")


def pytest_collection_modifyitems(config, items):
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return  # don't import torch for nothing
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (torch.cuda.is_available() is False)")
    for item in gpu_items:
        item.add_marker(skip)


class NotebookTimes:
    """Sum the setup+call+teardown durations of nbval cells per .ipynb file.

    Under xdist the controller receives every worker's reports through
    pytest_runtest_logreport, so timing is recorded there (and not on workers, which
    would only see their own share).  Kernel start-up falls in the first cell's setup
    and shutdown in the last cell's teardown, so the sum is the notebook's wall time.
    """

    def __init__(self, config):
        self.is_worker = hasattr(config, "workerinput")
        self.seconds = defaultdict(float)
        self.failed = set()

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report):
        if self.is_worker:
            return
        path = report.nodeid.split("::", 1)[0]
        if path.endswith(".ipynb"):
            self.seconds[path] += report.duration
            if report.failed:
                self.failed.add(path)

    @pytest.hookimpl
    def pytest_terminal_summary(self, terminalreporter):
        if self.is_worker or not self.seconds:
            return
        terminalreporter.section("notebook wall time")
        total_label = "total (summed over workers)"
        width = max(len(total_label), *(len(path) for path in self.seconds))
        for path in sorted(self.seconds):
            flag = "  FAILED" if path in self.failed else ""
            terminalreporter.write_line(f"{path:<{width}}  {self.seconds[path]:7.1f} s{flag}")
        total = sum(self.seconds.values())
        terminalreporter.write_line(f"{total_label:<{width}}  {total:7.1f} s")
