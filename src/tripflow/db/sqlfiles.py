"""The one loader of tripflow's `.sql` files (package data next to the module using them).

A folder is named relative to the `tripflow` package (`"marts/sql"`, `"processing/sql"`).
Three shapes of file:

- `text(folder, name)`: the whole file, one query (a mart definition);
- `statements(folder, name)`: statements run in order, split after lines ending in `;`
  (comment lines kept with the statement that follows them);
- `queries(folder, name)`: named statements, each introduced by a line `-- name: <name>`
  (what a module with several unrelated queries keeps in one file).

Files are read once per process.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_NAME_LINE = re.compile(r"^--\s*name:\s*([A-Za-z_][A-Za-z0-9_]*)\s*$")


@cache
def text(folder: str, name: str) -> str:
    """The text of `folder/name` (relative to the tripflow package)."""
    return resources.files("tripflow").joinpath(folder, name).read_text("utf-8")


def names(folder: str, prefix: str = "") -> tuple[str, ...]:
    """The `.sql` files of `folder` whose name starts with `prefix`, without `.sql`,
    in name order."""
    entries = resources.files("tripflow").joinpath(folder).iterdir()
    return tuple(sorted(entry.name.removesuffix(".sql") for entry in entries
                        if entry.name.startswith(prefix) and entry.name.endswith(".sql")))


def split(sql: str) -> list[str]:
    """The statements of a SQL text: split after lines ending in ';' (comments kept)."""
    statements: list[str] = []
    current: list[str] = []
    for line in sql.splitlines():
        current.append(line)
        stripped = line.strip()
        if stripped.endswith(";") and not stripped.startswith("--"):
            statements.append("\n".join(current).strip())
            current = []
    rest = "\n".join(current).strip()
    if rest and not all(ln.strip().startswith("--") or not ln.strip() for ln in current):
        statements.append(rest)
    return statements


def statements(folder: str, name: str) -> list[str]:
    """The statements of `folder/name`, in file order."""
    return split(text(folder, name))


@cache
def queries(folder: str, name: str) -> dict[str, str]:
    """The named statements of `folder/name`: `-- name: <name>` lines start each one;
    text before the first is the file's own comment. A trailing `;` is dropped."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text(folder, name).splitlines():
        match = _NAME_LINE.match(line.strip())
        if match:
            if match.group(1) in found:
                raise ValueError(f"{folder}/{name}: query {match.group(1)!r} named twice")
            current = found[match.group(1)] = []
        elif current is not None:
            current.append(line)
    return {key: "\n".join(lines).strip().removesuffix(";").rstrip()
            for key, lines in found.items()}
