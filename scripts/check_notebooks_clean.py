#!/usr/bin/env python3
"""Fail (exit 1) if any notebook under notebooks/ carries outputs, execution counts or saved widget state.

Notebooks are committed clean so diffs stay readable and no endpoint URL, result or key leaks into git.
Usage: python scripts/check_notebooks_clean.py [NOTEBOOK_OR_FOLDER ...]   (default: notebooks/)
Clear one with: jupyter nbconvert --clear-output --inplace notebooks/NAME.ipynb
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def problems(path: Path) -> list[str]:
    """Every reason `path` is not clean, one string each (empty when clean)."""
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        return [f"{path}: not a readable notebook ({exc})"]
    found = []
    for index, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        if cell.get("outputs"):
            found.append(f"{path}: cell {index} has {len(cell['outputs'])} output(s)")
        if cell.get("execution_count") is not None:
            found.append(f"{path}: cell {index} has execution_count {cell['execution_count']}")
    if "widgets" in nb.get("metadata", {}):
        found.append(f"{path}: metadata holds saved widget state")
    return found


def notebooks(args: list[str]) -> list[Path]:
    targets = [Path(a) for a in args] or [ROOT / "notebooks"]
    paths: list[Path] = []
    for target in targets:
        paths.extend(sorted(target.glob("*.ipynb")) if target.is_dir() else [target])
    return paths


def main(argv: list[str] | None = None) -> int:
    paths = notebooks(sys.argv[1:] if argv is None else argv)
    if not paths:
        print("no notebooks found", file=sys.stderr)
        return 1
    found = [p for path in paths for p in problems(path)]
    for line in found:
        print(line)
    if found:
        print("clear them with: jupyter nbconvert --clear-output --inplace notebooks/*.ipynb")
        return 1
    print(f"{len(paths)} notebooks clean")
    return 0


if __name__ == "__main__":
    sys.exit(main())
