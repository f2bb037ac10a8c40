"""Rules the codebase keeps: short functions, no private Dagster APIs."""

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAX_LINES = 60


def python_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (REPO / folder).rglob("*.py"))


def test_no_function_is_longer_than_sixty_lines_without_saying_why():
    long = []
    for path in python_files("lora_assets"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_LINES and "Long because" not in (ast.get_docstring(node) or ""):
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []


def test_nothing_imports_private_dagster_modules():
    private = re.compile(r"^\s*(from|import)\s+dagster\._", re.M)
    offenders = [
        str(path.relative_to(REPO))
        for path in python_files("lora_assets", "lora_assets_tests", "benchmarks")
        if private.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []
