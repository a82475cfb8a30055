"""Java jars tripflow runs (Apache Kafka brokers, Spark's Delta Lake and JDBC driver).

Each jar set is a small Maven pom in `jarsets/` with pinned versions. `ensure(name)` copies
the set's jars once into a cache folder named after the pom's hash, so a changed pin fetches
afresh and an unchanged one never touches the network again. The cache is
TRIPFLOW_JARS_DIR, else ~/.cache/tripflow/jars; `make test` fills it before any test runs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from importlib import resources
from pathlib import Path

from rich.console import Console

console = Console(stderr=True, highlight=False)
JAR_SETS = ("kafka", "spark")


class JarsError(RuntimeError):
    """The jars could not be fetched; the message says what to do."""


def cache_root() -> Path:
    configured = os.environ.get("TRIPFLOW_JARS_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".cache/tripflow/jars"


def pom_text(name: str) -> str:
    if name not in JAR_SETS:
        raise JarsError(f"unknown jar set {name!r}: choose one of {', '.join(JAR_SETS)}")
    return resources.files("tripflow.services").joinpath(f"jarsets/{name}.pom.xml").read_text()


def folder(name: str) -> Path:
    """Where the jar set lives once fetched (whether or not it is there yet)."""
    digest = hashlib.sha256(pom_text(name).encode()).hexdigest()[:12]
    return cache_root() / f"{name}-{digest}"


def ensure(name: str) -> list[Path]:
    """The jar set's jars, fetched with Maven on first use (progress on stderr)."""
    target = folder(name)
    done = target / ".complete"
    if not done.exists():
        _fetch(name, target)
        done.touch()
    return sorted(target.glob("*.jar"))


def classpath(name: str) -> str:
    return os.pathsep.join(str(jar) for jar in ensure(name))


def _fetch(name: str, target: Path) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise JarsError(f"Maven (mvn) is needed once to fetch the {name} jars: install it "
                        "(apt-get install maven) or fill TRIPFLOW_JARS_DIR from another machine")
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    pom = staging / "pom.xml"
    pom.write_text(pom_text(name))
    cmd = [mvn, "-B", "-q", "-f", str(pom), "dependency:copy-dependencies",
           f"-DoutputDirectory={staging}", "-DincludeScope=runtime"]
    with console.status(f"Fetching the {name} jars with Maven into {target}…"):
        result = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise JarsError(f"Maven could not fetch the {name} jars (is Maven Central "
                        f"reachable?):\n{tail}")
    pom.unlink()
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)  # whole or absent: a killed fetch leaves only `.partial`
    count = len(list(target.glob("*.jar")))
    console.print(f"[green]✓[/] {count} {name} jars in {target}")
