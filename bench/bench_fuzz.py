"""The long fuzz run: many mutated records through produce → stream and bronze → silver →
marts as real `tripflow` commands, every line accounted for (tests/pipeline/fuzzkit.py;
`make test` runs a short version in tests/pipeline/test_fuzz.py).

Prints one JSON object: the counts (lines, records sent, clicks, duplicates, bad distinct
and seen, too large, punctuation, U+0000 removed), seconds, and "ok" (every check held).

Run: PYTHONPATH=src:. python bench/bench_fuzz.py [--records N] [--seed S] [--home DIR]
Embedded services are started under --home (default ./.tripflow-bench); every run uses a
new database, topic and lake folder there.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

from tests.pipeline.fuzzkit import account, expected, fuzz_files, run_pipeline
from tripflow import db, services
from tripflow.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--too-large", type=int, default=10)
    parser.add_argument("--home", type=Path, default=Path(".tripflow-bench"))
    args = parser.parse_args()

    home = args.home.resolve()
    services.up(Settings(home=home))
    server_dsn = services.pg_dsn(Settings(home=home))
    name = f"fuzz_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    dsn = server_dsn.rsplit("/", 1)[0] + f"/{name}"
    db.migrate(dsn)
    work = Path(tempfile.mkdtemp(prefix="fuzz-", dir=home))
    settings = Settings(home=home, pg_dsn=dsn, topic=f"fuzz_{name}",
                        kafka_bootstrap=services.kafka_bootstrap(Settings(home=home)),
                        lake_uri=str(work / "lake"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPFLOW_")}
    env.update({"TRIPFLOW_HOME": str(home), "TRIPFLOW_PG_DSN": dsn,
                "TRIPFLOW_KAFKA_BOOTSTRAP": settings.kafka_bootstrap or "",
                "TRIPFLOW_TOPIC": settings.topic, "TRIPFLOW_LAKE_URI": settings.lake})

    def tripflow(*command: str) -> str:
        result = subprocess.run([sys.executable, "-m", "tripflow", *command], env=env,
                                capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise SystemExit(f"tripflow {' '.join(command)} exited {result.returncode}:\n"
                             f"{result.stdout}\n{result.stderr}")
        return result.stdout

    folder = work / "logs"
    folder.mkdir()
    data = fuzz_files(folder, records=args.records, seed=args.seed, too_large=args.too_large)
    want = expected(data, read_ms=int(time.time() * 1000))
    started = time.monotonic()
    produced = run_pipeline(tripflow, folder)
    seconds = round(time.monotonic() - started, 1)
    figures = account(settings, data, want, produced)
    print(json.dumps({"bench": "fuzz", "seed": args.seed, **figures, "seconds": seconds,
                      "ok": True}))


if __name__ == "__main__":
    main()
