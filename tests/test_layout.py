"""The code's layout rules (issue 29), read from the source with `ast`: no import cycle among lyra_hf's modules, the
metric modules import nothing else of lyra_hf, no function over 60 lines or module over 450 (the model file aside),
argparse's Namespace only in the command-line modules, and no task-name comparison outside the task table."""

import ast
from pathlib import Path


PACKAGE = Path(__file__).resolve().parents[1] / "lyra_hf"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The lyra_hf modules that `path` imports, at any depth of its code (function-level imports count too)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {module for module in found if module in modules and module != name}


def import_graph() -> dict[str, set[str]]:
    paths = [
        path
        for path in PACKAGE.rglob("*.py")
        if "metrics/" not in str(path.relative_to(PACKAGE)) or path.name == "__init__.py"
    ]
    modules = {module_name(path): path for path in paths}
    return {name: imported_modules(path, set(modules)) for name, path in modules.items()}


def test_no_import_cycle_among_lyra_hf_modules():
    graph = import_graph()
    # A package imports its own submodules to re-export them; a cycle through a package's __init__ and its own
    # submodules is that, not a cycle between ideas.
    graph = {
        name: {target for target in targets if not target.startswith(f"{name}.")} for name, targets in graph.items()
    }
    visiting, done, cycles = [], set(), []

    def visit(name):
        if name in done:
            return
        if name in visiting:
            cycles.append(visiting[visiting.index(name) :] + [name])
            return
        visiting.append(name)
        for target in sorted(graph[name]):
            visit(target)
        visiting.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)
    assert cycles == []


def test_metrics_import_nothing_else_of_lyra_hf():
    graph = import_graph()
    assert {target for target in graph["lyra_hf.metrics"] if not target.startswith("lyra_hf.metrics")} == set()


def test_no_code_outside_the_task_table_compares_a_task_name():
    """Per-task behaviour lives on the rows of lyra_hf.tasks.TASKS: elsewhere no comparison (==, !=, in) involves a
    task's name."""
    from lyra_hf.tasks import TASKS

    found = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "tasks.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Compare):
                continue
            operands = [node.left, *node.comparators]
            constants = [
                item
                for operand in operands
                for item in ([*operand.elts] if isinstance(operand, (ast.Tuple, ast.List, ast.Set)) else [operand])
            ]
            if any(isinstance(item, ast.Constant) and item.value in TASKS for item in constants):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert found == []


LONGEST_FUNCTION, LONGEST_MODULE = 60, 450
# The model travels alone as remote code (`trust_remote_code`), so it stays one file.
SELF_CONTAINED = ("modeling_lyra.py",)
# Where a command's flags are parsed: the only modules that may hold argparse's Namespace.
COMMAND_LINE_MODULES = ("cli.py", "train.py", "predict.py", "scan/command.py", "design/command.py", "prior/command.py")


def test_no_function_over_60_lines_and_no_module_over_450():
    long_functions, long_modules = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        text, name = path.read_text(), str(path.relative_to(PACKAGE))
        if len(text.splitlines()) > LONGEST_MODULE and name not in SELF_CONTAINED:
            long_modules.append((name, len(text.splitlines())))
        for node in ast.walk(ast.parse(text)):
            if (
                isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                and node.end_lineno - node.lineno + 1 > LONGEST_FUNCTION
            ):
                long_functions.append((f"{name}:{node.name}", node.end_lineno - node.lineno + 1))
    assert (long_functions, long_modules) == ([], [])


def test_argparse_namespaces_stay_in_the_command_line_modules():
    """Library functions take options dataclasses or plain parameters; only the modules that parse flags see a
    Namespace."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if str(path.relative_to(PACKAGE)) in COMMAND_LINE_MODULES:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr == "Namespace") or (
                isinstance(node, ast.Name) and node.id == "Namespace"
            ):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert found == []


def code_map_paths() -> list[str]:
    """The paths README's code map names: in a row "`lyra_hf/a/b.py`, `c.py`" the later names share the first's
    folder; a name ending in "/" is a folder, covering what it holds."""
    import re

    text = (PACKAGE.parent / "README.md").read_text().split("## Code map", 1)[1].split("\n## ", 1)[0]
    paths = []
    for row in text.splitlines():
        if not row.startswith("| `"):
            continue
        names = re.findall(r"`([^`]+)`", row.split("|")[1])
        folder = names[0].rsplit("/", 1)[0] + "/" if "/" in names[0] else ""
        paths += [names[0], *(name if "/" in name else folder + name for name in names[1:])]
    return paths


def test_the_readme_code_map_names_every_file_of_the_package():
    named = code_map_paths()
    missing = [
        str(path.relative_to(PACKAGE.parent))
        for path in sorted(PACKAGE.rglob("*"))
        if path.is_file()
        and "__pycache__" not in path.parts
        and path.name not in ("__init__.py", "__main__.py")
        and not any(
            str(path.relative_to(PACKAGE.parent)) == name
            or (name.endswith("/") and str(path.relative_to(PACKAGE.parent)).startswith(name))
            for name in named
        )
    ]
    assert missing == []


def test_ruff_finds_nothing_and_the_tree_is_formatted():
    """The linter (pyproject.toml's `[tool.ruff]`: lines of at most 120 characters, unused imports and variables,
    undefined names, sorted imports) finds nothing, and `ruff format` would change nothing."""
    import subprocess
    import sys

    root = PACKAGE.parent
    for command in (["check", "."], ["format", "--check", "."]):
        completed = subprocess.run([sys.executable, "-m", "ruff", *command], cwd=root, capture_output=True, text=True)
        assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-1000:]
