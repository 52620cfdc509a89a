"""The package's import layering (docs/development.md), checked on the source with `ast`.

Every `import` and `from ... import` in `defax_keras`, function-level ones
included, must point to the importing module's own layer or a lower one.
Packages of one layer (evaluation, explain, export) do not import each other.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "defax_keras"

LAYERS = (
    ("core", ("errors", "cache", "constants", "console", "metrics", "plotting")),
    ("data", ("data",)),
    ("faces", ("faces",)),
    ("video", ("video",)),
    ("models", ("models",)),
    ("training", ("training",)),
    ("applications", ("evaluation", "explain", "export")),
    ("inference", ("inference",)),
    ("web", ("web",)),
    ("cli", ("cli",)),
)
RANK = {part: rank for rank, (_, parts) in enumerate(LAYERS) for part in parts}
FACADE = "__init__"  # defax_keras/__init__.py: the public API, above everything (its imports are lazy)


def _part(module: str) -> str | None:
    """`defax_keras.models.defax` -> `models`; None for modules outside the package."""
    pieces = module.split(".")
    if pieces[0] != "defax_keras":
        return None
    return pieces[1] if len(pieces) > 1 else FACADE


def _imports(path: Path, module: str):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against this module's package
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield node.lineno, target
            for alias in node.names:  # `from defax_keras import models` imports defax_keras.models
                if target == "defax_keras":
                    yield node.lineno, f"defax_keras.{alias.name}"


def _is_module(package: Path, part: str) -> bool:
    return (package / part).is_dir() or (package / f"{part}.py").is_file()


def _modules(package: Path):
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package.parent).with_suffix("")
        parts = list(relative.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield path, ".".join(parts)


def layering_violations(package: Path = PACKAGE) -> list[str]:
    problems = []
    for path, module in _modules(package):
        source_part = _part(module)
        if source_part == FACADE:
            continue
        if source_part not in RANK:
            problems.append(f"{module}: not assigned to a layer (add it to LAYERS and docs/development.md)")
            continue
        for line, target in _imports(path, module):
            target_part = _part(target)
            if target_part is not None and not _is_module(package, target_part):
                target_part = FACADE  # a name defined in defax_keras/__init__.py, such as __version__
            if target_part in (None, FACADE, source_part):
                continue  # outside the package, `from defax_keras import __version__`, or the same package
            where = f"{path.relative_to(package.parent).as_posix()}:{line}"
            if target_part not in RANK:
                problems.append(f"{where}: imports {target}, which is not assigned to a layer")
            elif RANK[target_part] > RANK[source_part]:
                problems.append(f"{where}: {source_part} imports {target} from the higher layer {target_part}")
            elif RANK[target_part] == RANK[source_part]:
                problems.append(f"{where}: {source_part} imports its sibling {target}")
    return problems


def test_imports_point_down_the_documented_layers():
    assert layering_violations() == []


def test_the_check_catches_upward_and_sideways_imports(tmp_path):
    package = tmp_path / "defax_keras"
    for folder in ("models", "training", "evaluation", "explain"):
        (package / folder).mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "models" / "__init__.py").write_text("")
    (package / "models" / "classifier.py").write_text(
        "def compile():\n    from defax_keras.training.objectives import ClassCrossEntropy\n"
    )
    (package / "training" / "__init__.py").write_text("from ..evaluation import metrics\n")
    (package / "evaluation" / "__init__.py").write_text("from defax_keras import explain\nfrom defax_keras import __version__\n")
    problems = layering_violations(package)
    assert problems == [
        "defax_keras/evaluation/__init__.py:1: evaluation imports its sibling defax_keras.explain",
        "defax_keras/models/classifier.py:2: models imports defax_keras.training.objectives from the higher layer training",
        "defax_keras/training/__init__.py:1: training imports defax_keras.evaluation from the higher layer evaluation",
    ]


def test_docs_state_the_same_order():
    text = (PACKAGE.parent / "docs" / "development.md").read_text(encoding="utf-8")
    order = " -> ".join(" / ".join(parts) if name != "core" else "core" for name, parts in LAYERS)
    normalised = " ".join(text.replace("`", "").split()).replace(" /", "/").replace("/ ", "/")
    assert order.replace(" / ", "/") in normalised, f"docs/development.md must state the order: {order}"
