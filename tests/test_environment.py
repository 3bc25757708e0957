"""The three descriptions of the environment must agree.

pyproject.toml declares compatible ranges, .ci/requirements-lock.txt the exact versions
seen green together (what `make` installs), environment.yml the conda route.  conda can't
run here, so environment.yml is parsed and compared instead.
"""

import importlib.metadata
import pathlib
import re
import tomllib

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = pathlib.Path(__file__).resolve().parents[1]
LOCK = ROOT / ".ci" / "requirements-lock.txt"
LAB_LOCK = ROOT / ".ci" / "requirements-lab-lock.txt"
EXTRAS = ("test", "html")  # installed by `make setup` together with the core dependencies
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][A-Za-z0-9.!]*)$")  # no +local, no markers


# ---- parsers ---------------------------------------------------------------------------


def parse_lock(text: str) -> dict[str, str]:
    """{canonical name: version} from `name==version` lines; anything else is an error."""
    pins = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = PIN.match(line)
        if not m:
            raise ValueError(f"lock line {n} is not an exact `name==version` pin: {line!r}")
        name = canonicalize_name(m[1])
        if name in pins:
            raise ValueError(f"lock line {n}: {name} is pinned twice")
        pins[name] = m[2]
    return pins


def parse_environment(doc: dict) -> tuple[list[str], list[str]]:
    """(conda dependencies, pip lines) of an environment.yml document."""
    conda, pip = [], []
    for dep in doc["dependencies"]:
        if isinstance(dep, dict):
            pip.extend(dep["pip"])
        else:
            conda.append(dep)
    return conda, pip


def pip_pins(lines: list[str]) -> dict[str, str]:
    """{canonical name: version} of the requirement lines; each must be an exact pin."""
    pins = {}
    for line in lines:
        if line.startswith("-"):
            continue  # options (-c, -e) are checked separately
        req = Requirement(line)
        specs = list(req.specifier)
        if len(specs) != 1 or specs[0].operator != "==" or "*" in specs[0].version:
            raise ValueError(f"environment.yml pip entry {line!r} is not an exact == pin")
        pins[canonicalize_name(req.name)] = specs[0].version
    return pins


def mismatches(pins: dict[str, str], lock: dict[str, str]) -> list[str]:
    """Human-readable disagreements between pins and the lock (missing names included)."""
    out = []
    for name, version in sorted(pins.items()):
        if name not in lock:
            out.append(f"{name}=={version} is not in the lock")
        elif Version(version) != Version(lock[name]):
            out.append(f"{name}: {version} here, {lock[name]} in the lock")
    return out


def unsatisfied(requirements: list[Requirement], lock: dict[str, str]) -> list[str]:
    out = []
    for req in requirements:
        name = canonicalize_name(req.name)
        if name not in lock:
            out.append(f"{req} has no pin in the lock")
        elif not req.specifier.contains(Version(lock[name]), prereleases=True):
            out.append(f"lock pins {name}=={lock[name]}, outside {req}")
    return out


# ---- the repository's files ------------------------------------------------------------


@pytest.fixture(scope="module")
def lock():
    return parse_lock(LOCK.read_text())


@pytest.fixture(scope="module")
def lab_lock():
    return parse_lock(LAB_LOCK.read_text())


@pytest.fixture(scope="module")
def project():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


@pytest.fixture(scope="module")
def env():
    return parse_environment(yaml.safe_load((ROOT / "environment.yml").read_text()))


def requirements(project, *extras) -> list[Requirement]:
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        reqs += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return reqs


def makefile_var(name: str) -> str:
    m = re.search(rf"^{name}\s*:?=\s*(.+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert m, f"Makefile defines no {name}"
    return m[1].strip()


def test_lock_is_exact_pins_with_the_cpu_torch_pinned_plainly(lock):
    assert lock["torch"] == "2.13.0"  # pip freeze says 2.13.0+cpu; the lock must not
    for name in ("numpy", "scipy", "matplotlib", "bitsandbytes", "nbval", "pytest"):
        assert name in lock, name


def test_lock_satisfies_the_pyproject_ranges(project, lock):
    reqs = requirements(project, *EXTRAS)
    assert unsatisfied(reqs, lock) == []


def test_lab_lock_adds_jupyterlab_without_touching_the_lock(project, lock, lab_lock):
    assert set(lab_lock) & set(lock) == set(), "a package pinned in both locks"
    assert unsatisfied([Requirement(r) for r in project["optional-dependencies"]["lab"]], lab_lock) == []
    assert "jupyterlab" in lab_lock
    assert makefile_var("LAB_LOCK") == ".ci/requirements-lab-lock.txt"


def test_pyproject_ranges_have_lower_and_upper_bounds(project):
    """Compatible ranges, not open-ended and not exact pins (packaging has no majors to cap)."""
    for req in requirements(project, *EXTRAS, "lab"):
        ops = {s.operator for s in req.specifier}
        assert ">=" in ops, f"{req}: no lower bound"
        assert "==" not in ops, f"{req}: exact pins belong in the lock"
        if canonicalize_name(req.name) != "packaging":
            assert "<" in ops, f"{req}: no upper bound (next major)"


def test_every_dependency_is_in_lock_and_environment_yml(project, lock, env):
    conda, pip = env
    yml = pip_pins(pip)
    for req in requirements(project, *EXTRAS):
        name = canonicalize_name(req.name)
        assert name in lock, f"{name} missing from the lock"
        assert name in yml, f"{name} missing from environment.yml"
    for req in requirements(project, "lab"):  # reading route: conda env and `make lab`
        assert canonicalize_name(req.name) in yml


def test_environment_yml_pins_agree_with_the_locks(lock, lab_lock, env):
    conda, pip = env
    yml = pip_pins(pip)
    assert mismatches(yml, {**lock, **lab_lock}) == []
    assert set(yml) - set(lock) == {"jupyterlab"}, "only JupyterLab may come from the lab lock"


def test_environment_yml_structure(project, env):
    conda, pip = env
    pythons = [d for d in conda if re.match(r"^python\s*[=<>]", d)]
    assert pythons == ["python=3.11"]
    assert SpecifierSet(project["requires-python"]).contains("3.11")
    assert "pip" in conda
    assert "-c .ci/requirements-lock.txt" in pip and LOCK.is_file()
    assert "-c .ci/requirements-lab-lock.txt" in pip and LAB_LOCK.is_file()
    assert "-e ." in pip  # the book's own library


def test_makefile_takes_torch_pin_from_the_lock():
    assert makefile_var("TORCH_PIN") == "$(shell grep -E '^torch==' $(LOCK))"
    assert makefile_var("LOCK") == ".ci/requirements-lock.txt"


def test_installed_versions_are_the_locked_ones(project, lock):
    """The environment under test is the lock (so the lock records what passed)."""
    wrong = []
    for req in requirements(project, *EXTRAS):
        name = canonicalize_name(req.name)
        installed = Version(importlib.metadata.version(req.name))
        if Version(installed.public) != Version(lock[name]):
            wrong.append(f"{name}: {installed} installed, {lock[name]} locked")
    assert wrong == []


# ---- the checks themselves fail when they should ---------------------------------------


def test_checks_catch_a_version_mismatch_and_a_range_violation():
    lock = parse_lock("numpy==2.4.6\ntorch==2.13.0\n")
    assert mismatches({"numpy": "2.4.5"}, lock) == ["numpy: 2.4.5 here, 2.4.6 in the lock"]
    assert mismatches({"scipy": "1.17.1"}, lock) == ["scipy==1.17.1 is not in the lock"]
    assert unsatisfied([Requirement("numpy>=2.5,<3")], lock) == [
        "lock pins numpy==2.4.6, outside numpy<3,>=2.5"
    ]
    assert unsatisfied([Requirement("tqdm>=4")], lock) == ["tqdm>=4 has no pin in the lock"]


@pytest.mark.parametrize(
    "text", ["torch==2.13.0+cpu\n", "numpy>=2\n", "numpy==2.4.6\nNumPy==2.4.6\n", "-e .\n"]
)
def test_lock_parser_rejects_anything_but_plain_pins(text):
    with pytest.raises(ValueError):
        parse_lock(text)


def test_yml_parser_rejects_ranges():
    with pytest.raises(ValueError, match="exact == pin"):
        pip_pins(["numpy>=2.4"])
