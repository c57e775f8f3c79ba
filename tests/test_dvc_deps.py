"""dvc.yaml's code deps are exactly what each stage runs, so `dvc repro` reruns a stage whenever its code changes.

A stage's ``cmd`` runs ``python -m stages.<name>``; the code it runs is the
import closure of that script over the project's own modules: every
``import``/``from ... import`` of a ``voicemill`` or ``stages`` module
anywhere in a file (function-local imports included, which a hand-kept list
misses), followed transitively, with the ``__init__.py`` of each package on
the way. A file in the closure that no dep covers (a file, or a folder
above it) means a change to it leaves the stage "up to date" with stale
outputs; a listed code file outside the closure reruns the stage for nothing.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

ROOTS = ("voicemill", "stages")


def _module_file(name: str) -> Path | None:
    """The file of a dotted module name in this repository (a module or a package's ``__init__.py``)."""
    base = REPO.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _package(path: Path) -> list[str]:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return parts[:-1]


def imported_names(path: Path) -> set[str]:
    """Dotted names of the project's modules ``path`` imports anywhere in it (``from a import b`` gives ``a``
    and ``a.b``: b may be a submodule)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the file's own package, up level - 1
                package = _package(path)
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return {n for n in names if n.split(".")[0] in ROOTS}


def import_closure(script: Path) -> set[Path]:
    """Every project file that running ``script`` can import, the packages' ``__init__.py`` included."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imported_names(path):
            parts = name.split(".")
            for k in range(1, len(parts) + 1):  # the module and each package above it
                found = _module_file(".".join(parts[:k]))
                if found is not None:
                    todo.append(found)
    return seen


def _stages() -> dict[str, dict]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _script(stage: dict) -> Path:
    match = re.search(r"python -m (stages\.\w+)", " ".join(stage["cmd"].split()))
    assert match, stage["cmd"]
    return _module_file(match.group(1))


def _covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(REPO)
    return any(rel == Path(d) or Path(d) in rel.parents for d in deps)


@pytest.mark.parametrize("name", sorted(_stages()))
def test_a_stage_depends_on_exactly_the_code_it_runs(name):
    stage = _stages()[name]
    deps = [d if isinstance(d, str) else next(iter(d)) for d in stage["deps"]]
    runs = import_closure(_script(stage))
    missing = sorted(str(p.relative_to(REPO)) for p in runs if not _covered(p, deps))
    assert not missing, f"dvc.yaml stage {name!r} runs these files but does not list them in deps: {missing}"
    code = [d for d in deps if d.split("/")[0] in ROOTS]
    unused = [d for d in code if not any(_covered(p, [d]) for p in runs)]
    assert not unused, f"dvc.yaml stage {name!r} lists deps its code never imports: {unused}"


def test_the_closure_sees_function_local_and_relative_imports(tmp_path):
    """What the check above relies on: an import inside a function body is followed, and so is the package."""
    seen = {p.relative_to(REPO).as_posix() for p in import_closure(REPO / "stages" / "train.py")}
    # voicemill/tts/training.py imports voicemill.tts.listening inside a function; listening reaches evaluate
    assert {"voicemill/tts/listening.py", "voicemill/evaluate.py", "voicemill/__init__.py",
            "voicemill/tts/__init__.py"} <= seen
    assert "voicemill/serve/engine.py" not in seen  # the runtime is not training's
