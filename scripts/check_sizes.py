#!/usr/bin/env python3
"""Modules over ~400 lines and functions over ~60, the house limits (docs/architecture.md).

    python scripts/check_sizes.py [--all] [--max-module 400] [--max-function 60] [PATH ...]

Lists every offender (or, with ``--all``, every module with its line count) and
exits 1 when there is one. Counts physical lines; a function's lines run from its
``def`` to its last line, docstring included (decorators, such as a Click command's
options, are not counted).
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

DEFAULT_PATHS = ("toolchain", "edge_runtime", "calibration")


def functions(tree: ast.AST) -> list[tuple[str, int, int]]:
    """(qualified name, first line, line count) of every function and method."""
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    found.append((name, child.lineno, child.end_lineno - child.lineno + 1))
                visit(child, name + ".")

    visit(tree, "")
    return found


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", default=list(DEFAULT_PATHS))
    parser.add_argument("--all", action="store_true", help="list every module with its line count")
    parser.add_argument("--max-module", type=int, default=400)
    parser.add_argument("--max-function", type=int, default=60)
    args = parser.parse_args(argv)
    files = sorted(
        p
        for root in args.paths
        for p in (Path(root).rglob("*.py") if Path(root).is_dir() else [Path(root)])
        if "_vendor" not in p.parts
    )  # generated code (flatbuffers) is not ours to size
    offenders = 0
    for path in files:
        text = path.read_text(encoding="utf-8")
        lines = len(text.splitlines())
        if args.all or lines > args.max_module:
            print(f"{lines:5d}  {path}" + ("  <- module over the limit" if lines > args.max_module else ""))
        offenders += lines > args.max_module
        for name, first, count in functions(ast.parse(text, filename=str(path))):
            if count > args.max_function:
                print(f"{count:5d}  {path}:{first} {name}()  <- function over the limit")
                offenders += 1
    return 1 if offenders else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
