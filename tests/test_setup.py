"""`make setup` and `make lab` without traps, tested in a temporary copy of the build files
with fake interpreters (shell scripts that answer like Python and log what they were asked),
so nothing is installed and each case takes a fraction of a second."""
import importlib.metadata
import os
import pathlib
import re
import shutil
import stat
import subprocess

import pytest
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")

FAKE_PYTHON = r"""#!/bin/sh
# answers like a Python interpreter of version $FAKE_VERSION and logs every call
echo "$*" >> "$FAKE_LOG"
case "$1" in
  -c) case "$2" in
        *version_info*) echo "${FAKE_VERSION:-3.11.7}";;
        *jupyterlab*) exit "${FAKE_LAB:-0}";;
      esac;;
  -m) case "$2" in
        venv) mkdir -p "$3/bin" && echo "home = fake" > "$3/pyvenv.cfg" && cp "$0" "$3/bin/python";;
        jupyter) env | grep -E '^(JUPYTER_|IPYTHONDIR|MPLCONFIGDIR|HF_HUB_OFFLINE)' | sort > "$FAKE_LOG.env";;
        pip) if [ -n "$FAKE_PIP_FAIL" ]; then case "$*" in *"$FAKE_PIP_FAIL"*)
               echo "ERROR: No matching distribution found for soupsieve==4.1.3" >&2; exit 1;; esac; fi;;
      esac;;
esac
"""


def makefile_var(name):
    return re.search(rf"^{name}\s*:?=\s*(.+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)[1].strip()


@pytest.fixture
def repo(tmp_path):
    """The Makefile, pyproject.toml and the locks in a temporary folder, plus a fake python."""
    for rel in ("Makefile", "pyproject.toml", ".ci/requirements-lock.txt", ".ci/requirements-lab-lock.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, tmp_path / rel)
    fake = write_script(tmp_path / "bin" / "fakepython", FAKE_PYTHON)
    return tmp_path, fake


def write_script(path, text, version=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if version is None else text.replace("${FAKE_VERSION:-3.11.7}", version))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def make(repo_dir, *args, **env):
    clean = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "VENV")}
    clean.update(FAKE_LOG=str(repo_dir / "calls.log"), **env)
    return subprocess.run(["make", "-C", str(repo_dir), "--no-print-directory", *args],
                          capture_output=True, text=True, env=clean, timeout=60)


def calls(repo_dir):
    log = repo_dir / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


# ---- the interpreter is checked before anything is created ----------------------------


def test_a_missing_interpreter_is_named_with_what_to_install(repo):
    d, _ = repo
    r = make(d, "setup", "PYTHON=python3.99")
    assert r.returncode != 0
    assert "'python3.99' was not found" in r.stderr
    assert "install Python 3.11 at 3.11.5 or newer" in r.stderr and "make PYTHON=" in r.stderr
    assert "Error 127" not in r.stderr and not (d / ".venv").exists()


@pytest.mark.parametrize("version", ["3.11.2", "3.11.4", "3.10.14", "3.12.3"])
def test_a_python_below_the_floor_or_of_another_minor_is_refused_before_installing(repo, version):
    d, fake = repo
    r = make(d, "setup", f"PYTHON={fake}", FAKE_VERSION=version)
    assert r.returncode != 0
    assert f"is Python {version}; the locked packages need Python 3.11 >= 3.11.5" in r.stderr
    assert "soupsieve" in r.stderr and "install Python 3.11" in r.stderr
    assert not (d / ".venv").exists()
    assert not any(" pip " in f" {c} " for c in calls(d))  # nothing was installed


def test_the_floor_passes_and_every_step_is_shown(repo):
    d, fake = repo
    r = make(d, "setup", f"PYTHON={fake}", FAKE_VERSION="3.11.5")
    assert r.returncode == 0, r.stderr
    steps = re.findall(r"^== \[(\d)/5\]", r.stdout, re.MULTILINE)
    assert steps == ["1", "2", "3", "4", "5"]
    pip = [c for c in calls(d) if c.startswith("-m pip")]
    assert [c.split()[-1] for c in pip] == ["pip==26.3", makefile_lock_pin(d, "torch"),
                                             ".ci/requirements-lock.txt", "."]
    assert not any("--quiet" in c or " -q" in c for c in pip)  # progress stays visible
    assert (d / ".venv" / ".installed").exists()
    r = make(d, "setup", f"PYTHON={fake}")
    assert r.returncode == 0 and "[1/5]" not in r.stdout  # done once


def makefile_lock_pin(d, name):
    return next(line for line in (d / ".ci/requirements-lock.txt").read_text().splitlines()
                if line.startswith(f"{name}=="))


# ---- a failed or stale set-up leaves nothing half-built --------------------------------


@pytest.mark.parametrize("failing", ["torch==", "requirements-lock.txt", "-e ."])
def test_a_failed_install_removes_the_half_built_venv(repo, failing):
    d, fake = repo
    r = make(d, "setup", f"PYTHON={fake}", FAKE_PIP_FAIL=failing)
    assert r.returncode != 0
    assert "removing the half-built .venv" in r.stderr
    assert not (d / ".venv").exists()
    r = make(d, "setup", f"PYTHON={fake}")  # the next run starts clean and succeeds
    assert r.returncode == 0 and "[1/5] creating .venv" in r.stdout


def test_a_venv_made_by_a_too_old_python_is_replaced(repo):
    d, fake = repo
    (d / ".venv").mkdir()
    (d / ".venv" / "pyvenv.cfg").write_text("home = old\n")
    write_script(d / ".venv" / "bin" / "python", FAKE_PYTHON, version="3.11.2")
    r = make(d, "setup", f"PYTHON={fake}")
    assert r.returncode == 0, r.stderr
    assert ".venv exists but its Python (3.11.2) is not 3.11 >= 3.11.5: removing it" in r.stdout
    assert "[1/5] creating .venv" in r.stdout


def test_a_non_venv_folder_is_never_removed(repo):
    d, fake = repo
    (d / ".venv").mkdir()
    (d / ".venv" / "precious.txt").write_text("keep me")
    r = make(d, "setup", f"PYTHON={fake}")
    assert r.returncode != 0 and "is not a virtual environment" in r.stderr
    assert (d / ".venv" / "precious.txt").read_text() == "keep me"


def test_the_floor_is_the_highest_requires_python_of_the_locked_packages():
    """PYTHON_FLOOR is the oldest 3.11.x that every installed locked package accepts."""
    lock = {canonicalize_name(line.split("==")[0])
            for line in (ROOT / ".ci/requirements-lock.txt").read_text().splitlines() if "==" in line}
    specs = {}
    for dist in importlib.metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"])
        if name in lock and dist.metadata.get("Requires-Python"):
            specs[name] = SpecifierSet(dist.metadata["Requires-Python"])
    assert len(specs) > 50
    floor = next(f"3.11.{x}" for x in range(40) if all(s.contains(f"3.11.{x}") for s in specs.values()))
    assert makefile_var("PYTHON_FLOOR") == floor
    assert [n for n, s in specs.items() if not s.contains(f"3.11.{int(floor.split('.')[2]) - 1}")] != []


# ---- make help, make lab ---------------------------------------------------------------


def test_make_help_lists_every_public_target(repo):
    d, _ = repo
    r = make(d, "help")
    phony = re.search(r"^\.PHONY:((?:.*\\\n)*.*)$", (ROOT / "Makefile").read_text(), re.MULTILINE)[1]
    internal = {"help", "student-copies", "html-site"}  # run by other targets and by the tests
    targets = set(phony.replace("\\\n", " ").split()) - internal
    listed = set(re.findall(r"^make ([\w-]+)", r.stdout, re.MULTILINE))
    assert targets - listed == set()
    assert r.stdout.startswith("make setup")


def fake_installed_venv(d, fake):
    (d / ".venv" / "bin").mkdir(parents=True)
    (d / ".venv" / "pyvenv.cfg").write_text("home = fake\n")
    shutil.copy(fake, d / ".venv" / "bin" / "python")
    (d / ".venv" / ".installed").touch()


@pytest.mark.parametrize("have_lab", [True, False])
def test_make_lab_takes_port_and_args_allows_root_and_keeps_files_under_build(repo, have_lab):
    d, fake = repo
    fake_installed_venv(d, fake)
    r = make(d, "lab", "LAB_PORT=9123", "LAB_ARGS=--no-browser --ServerApp.token=t",
             FAKE_LAB="0" if have_lab else "1")
    assert r.returncode == 0, r.stderr
    log = calls(d)
    lab = [c for c in log if c.startswith("-m jupyter lab")]
    assert len(lab) == 1
    args = lab[0].split()
    assert "--port=9123" in args and "--no-browser" in args and "--ServerApp.token=t" in args
    assert ("--allow-root" in args) == (os.getuid() == 0)
    installs = [c for c in log if c.startswith("-m pip install")]
    assert installs == ([] if have_lab else
                        ["-m pip install -r .ci/requirements-lab-lock.txt -c .ci/requirements-lock.txt"])
    env = dict(line.split("=", 1) for line in (d / "calls.log.env").read_text().splitlines())
    assert env["HF_HUB_OFFLINE"] == "1"
    for key in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR", "MPLCONFIGDIR"):
        assert env[key].startswith(str(d / "build")), key


@pytest.mark.parametrize("uid", ["0", "1000"])
def test_allow_root_follows_the_user_id(repo, uid):
    d, fake = repo
    fake_installed_venv(d, fake)
    write_script(d / "fakeid" / "id", f"#!/bin/sh\necho {uid}\n")  # `id -u` answers uid
    r = make(d, "lab", PATH=f"{d / 'fakeid'}{os.pathsep}{os.environ['PATH']}")
    assert r.returncode == 0, r.stderr
    lab = [c for c in calls(d) if c.startswith("-m jupyter lab")]
    assert ("--allow-root" in lab[0].split()) == (uid == "0")


def test_make_browser_warns_loudly_when_it_cannot_get_a_browser(repo):
    d, _ = repo
    write_script(d / "fakeid" / "id", "#!/bin/sh\necho 1000\n")  # not root: no apt-get install
    r = subprocess.run([shutil.which("make"), "-C", str(d), "--no-print-directory", "browser"],
                       capture_output=True, text=True, timeout=60,
                       env={"PATH": str(d / "fakeid"), "HOME": str(d)})
    assert r.returncode == 0
    assert "WARNING: no headless Chromium" in r.stderr and "will be SKIPPED" in r.stderr
