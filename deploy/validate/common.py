"""Helpers shared by the deploy checks: the report, running tools, reading YAML."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import yaml

# Marker that Secret templates and .env.example use instead of real values.
PLACEHOLDER = "REPLACE-ME"


class Report:
    def __init__(self) -> None:
        self.ok = 0
        self.failed = 0

    def result(self, what: str, path: str, problems: List[str], detail: str = "") -> None:
        if problems:
            self.failed += 1
            print(f"FAIL {what:<11} {path}")
            for p in problems:
                for i, line in enumerate(str(p).rstrip().splitlines()):
                    print(f"       {'- ' if i == 0 else '  '}{line}")
        else:
            self.ok += 1
            print(f"OK   {what:<11} {path}{f'  ({detail})' if detail else ''}")
        sys.stdout.flush()


def rel(repo: Path, p: Path) -> str:
    try:
        return str(p.relative_to(repo))
    except ValueError:
        return str(p)


def run(cmd: List[str], cwd: Optional[Path] = None,
        env: Optional[Dict[str, str]] = None) -> Tuple[int, str]:
    """Runs a command to completion: (exit code, stdout and stderr together)."""
    proc = subprocess.run(
        cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "NO_COLOR": "1", **(env or {})},
    )
    return proc.returncode, proc.stdout


def venv_tool(name: str) -> str:
    """A console script installed next to this interpreter (the venv's bin)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise SystemExit(f"{name} is not installed: run scripts/check-deploy.sh (it installs it)")
    return found


def load_yaml_docs(path: Path) -> Tuple[List[Any], Optional[str]]:
    try:
        with path.open() as f:
            return [d for d in yaml.safe_load_all(f) if d is not None], None
    except yaml.YAMLError as e:
        return [], f"not valid YAML: {e}"
