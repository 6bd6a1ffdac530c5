"""constraints.txt (the versions `make install` and CI use) agrees with pyproject.toml and the Makefile.

A pin that falls below a raised lower bound, a new dependency left unpinned, or a torch version in the
Makefile that differs from the pinned one would each break `make install` on a fresh machine only, long
after the change that caused it; these checks catch it at once.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]


def read_pins(path: Path) -> dict[str, str]:
    """``{canonical name: version}`` of a constraints file; rejects anything but ``name==version``."""
    pins: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==([A-Za-z0-9.+!-]+)", line)
        assert match, f"{path.name}:{number}: expected 'name==version', got {line!r}"
        name = canonicalize_name(match[1])
        assert name not in pins, f"{path.name}:{number}: {name} is pinned twice"
        pins[name] = match[2]
    return pins


def project_requirements() -> list[Requirement]:
    """The base dependencies and the `dev` extra: what `make install` asks pip for."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    listed = project["dependencies"] + project["optional-dependencies"]["dev"]
    return [Requirement(text) for text in listed]


def test_read_pins_reads_names_canonically_and_rejects_a_range_and_a_repeat(tmp_path: Path) -> None:
    good = tmp_path / "good.txt"
    good.write_text("# header\n\nPyYAML==6.0.4\ntorch==2.14.1+cu130\n")
    assert read_pins(good) == {"pyyaml": "6.0.4", "torch": "2.14.1+cu130"}
    ranged = tmp_path / "ranged.txt"
    ranged.write_text("# header\ntorch>=2.4\n")
    with pytest.raises(AssertionError, match="ranged.txt:2: expected 'name==version'"):
        read_pins(ranged)
    repeated = tmp_path / "repeated.txt"
    repeated.write_text("Foo_Bar==1.0\nfoo-bar==1.1\n")
    with pytest.raises(AssertionError, match="repeated.txt:2: foo-bar is pinned twice"):
        read_pins(repeated)


def test_every_dependency_is_pinned_within_its_declared_range() -> None:
    pins = read_pins(ROOT / "constraints.txt")
    for requirement in project_requirements():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"constraints.txt does not pin {name} (a dependency in pyproject.toml)"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {name}=={pins[name]}, outside pyproject.toml's {requirement}"
        )


def test_makefile_torch_pins_match_the_constraints() -> None:
    """The Makefile installs torch first by exact version; a different pin makes pip refuse both."""
    pins = read_pins(ROOT / "constraints.txt")
    makefile = (ROOT / "Makefile").read_text()
    for package in ("torch", "torchvision"):
        match = re.search(rf"\b{package}==([0-9][^\s]*)", makefile)
        assert match, f"Makefile's install no longer pins {package}"
        assert match[1] == pins[package], (
            f"Makefile pins {package}=={match[1]}, constraints.txt {pins[package]}"
        )


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_install_passes_the_constraints_to_every_package_install_unless_cleared() -> None:
    def installs(*overrides: str) -> list[str]:
        plan = subprocess.run(
            ["make", "-n", "install", *overrides], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.splitlines()
        return [line for line in plan if "pip install" in line and "--upgrade pip" not in line]

    pinned = installs()
    assert len(pinned) == 2, pinned  # torch first, then tmtcam with its dependencies
    assert all("-c constraints.txt" in line for line in pinned), pinned
    assert not any("-c " in line for line in installs("CONSTRAINTS=")), "CONSTRAINTS= should drop the pins"
