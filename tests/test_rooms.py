"""The rooms import one way, as their __init__.py files say: model and lora import no other room, data at most
model, weights only model's file helpers, predictor (what training and tagging share) neither train nor tag,
train and tag never each other, and nothing but tests imports bench; and every third-party import is declared."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROOMS = ("model", "lora", "data", "weights", "predictor", "train", "tag", "bench")
ALLOWED = {
    "model": set(),
    "lora": set(),
    "data": {"model"},
    "weights": {"model"},
    "predictor": {"model", "lora", "data"},
    "train": {"model", "lora", "data", "predictor"},
    "tag": {"model", "lora", "data", "predictor"},
    "bench": {"model", "lora", "data", "predictor", "train", "tag"},
}


def imported_modules(path: Path) -> dict[str, int]:
    """top-level module -> first line importing it, for every absolute import in a file (top level or in a
    function)."""
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            found.setdefault(name.split(".")[0], node.lineno)
    return found


def imported_rooms(path: Path) -> dict[str, int]:
    """room -> first line importing it, for every import of another room in a file."""
    return {module: line for module, line in imported_modules(path).items() if module in ROOMS}


@pytest.mark.parametrize("room", ROOMS)
def test_imports_run_one_way(room):
    files = sorted((ROOT / room).glob("*.py"))
    assert files, f"{room}/ has no Python files"
    wrong = [f"{path.relative_to(ROOT)}:{line} imports {other}"
             for path in files for other, line in imported_rooms(path).items()
             if other != room and other not in ALLOWED[room]]
    assert not wrong, "\n".join(wrong)


def test_weights_use_only_the_file_helpers_of_model():
    for path in sorted((ROOT / "weights").glob("*.py")):
        modules = {node.module for node in ast.walk(ast.parse(path.read_text()))
                   if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("model")}
        assert modules <= {"model.files"}, f"{path.relative_to(ROOT)} imports {sorted(modules)}"


def test_every_room_says_what_it_holds_and_may_import():
    for room in ROOMS:
        doc = ast.get_docstring(ast.parse((ROOT / room / "__init__.py").read_text()))
        assert doc and "import" in doc.lower(), f"{room}/__init__.py does not say what it may import"


def test_tagging_loads_nothing_of_training():
    """What `tag/` imports, directly or through `predictor/`, never reaches `train/`: a server or a user of the API
    needs nothing of the training package. Checked in a fresh interpreter, after importing every module of tag/."""
    modules = sorted(f"tag.{path.stem}" for path in (ROOT / "tag").glob("*.py") if path.stem != "__init__")
    code = (f"import importlib, sys\nfor name in {modules!r}: importlib.import_module(name)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('train', 'bench')))")
    found = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"


def normalised(distribution: str) -> str:
    """A distribution's name as pip compares them (PEP 503): case and runs of - _ . do not matter."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


def requirement_names(path: Path) -> set[str]:
    """The distributions a requirements file names (normalised as pip does), following `-r` includes."""
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("-r "):
            names |= requirement_names(path.parent / line[3:].strip())
        elif line:
            names.add(normalised(re.split(r"[<>=!~\[; ]", line)[0]))
    return names


def makefile_no_deps() -> set[str]:
    """The distributions the Makefile installs with `--no-deps` (data-only packages: their own dependencies are
    not wanted), by name."""
    return {normalised(m) for m in re.findall(r"pip install -q --no-deps (\S+)==", (ROOT / "Makefile").read_text())}


@pytest.mark.parametrize("rooms, requirements", [
    (tuple(r for r in ROOMS if r != "bench"), "requirements.txt"),
    (ROOMS + ("tests",), "requirements-dev.txt"),
])
def test_every_third_party_import_is_declared(rooms, requirements):
    """Each module that product code imports (and, with the dev file, benchmarks and tests) comes from the Python
    standard library, from the project, or from a distribution that its requirements file or the Makefile's
    `--no-deps` installs declare."""
    distributions = importlib.metadata.packages_distributions()
    declared = requirement_names(ROOT / requirements) | makefile_no_deps()
    missing = []
    for room in rooms:
        for path in sorted((ROOT / room).rglob("*.py")):
            for module, line in imported_modules(path).items():
                if module in sys.stdlib_module_names or module in ROOMS + ("tests", "__future__"):
                    continue
                found = {normalised(d) for d in distributions.get(module, [module])}
                if not found & declared:
                    missing.append(f"{path.relative_to(ROOT)}:{line} imports {module} ({', '.join(sorted(found))})")
    assert not missing, f"not declared in {requirements}:\n" + "\n".join(missing)
