"""The layout figures of BENCHMARKS.md ("Layout"): the longest functions, and the modules over 450 lines, of lyra_hf/.

python scripts/layout_report.py [ROOT]     # ROOT: a checkout (default: this one)
"""

import ast
import sys
from pathlib import Path


def lengths(package: Path) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(lines, name) of every function and of every module under `package`, longest first."""
    functions, modules = [], []
    for path in package.rglob("*.py"):
        text, name = path.read_text(), str(path.relative_to(package.parent))
        modules.append((len(text.splitlines()), name))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions.append((node.end_lineno - node.lineno + 1, f"{name}:{node.name}"))
    return sorted(functions, reverse=True), sorted(modules, reverse=True)


def main(root: Path) -> None:
    functions, modules = lengths(root / "lyra_hf")
    print("functions over 60 lines:", sum(1 for lines, _ in functions if lines > 60), "- longest:", functions[:4])
    print(
        "modules over 450 lines (besides modeling_lyra.py):",
        [module for module in modules if module[0] > 450 and "modeling_lyra" not in module[1]],
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1])
