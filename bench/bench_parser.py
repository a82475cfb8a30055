"""Throughput of `tripflow.records.parser.parse_batch` on one core.

Builds a realistic batch in memory: records shaped like the real sample
(`/work/shared/data` or --sample), with varied sessions, document ids, event times and
clinical areas (2,000 distinct strings of mixed spellings, 12 % empty), about 25 %
carrying a 20-id `Documents` list and about 2 % bad lines of every kind. Values are
bytes, as a Kafka consumer hands them over, with a topic/partition/offset context.
Times `parse_batch` (best of --repeat after one warm-up) and prints one JSON object:
{"records", "seconds", "records_per_s", "mb_per_s"}.

Run: taskset -c 0 python bench/bench_parser.py  (the script also pins itself to one CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import pyarrow as pa

from tripflow.records.parser import parse_batch

DEFAULT_SAMPLE = Path("/work/shared/data/tripclick_sample_2016-01-01.jsonl")
SESSION_ALPHABET = "abcdefghijklmnopqrstuvwxyz012345"
AREA_SPELLINGS = [
    "Oncology", "Surgery", "OB-Gyn", "obgyn", "Cardiology", "Endocrinology", "endocrinology",
    "Neurology", "neurology", "Pediatrics", "pediatrics", "Women's Health", "Gastroenterology",
    "Infectious Disease", "infectiousdisease", "Primary Care", "preventive_medicine",
    "sports_medicine", "public_health", "tropical_medicine", "Psychiatry", "Radiology",
]
BAD_LINES = [
    b"\xff\xfe{\"DateCreated\": 1}",
    b"{\"DateCreated\": \"/Date(1451606501933)/\", \"SessionId\": ",
    b"[1, 2]",
    b"null",
    b"{\"DateCreated\": \"/Date(abc)/\", \"SessionId\": \"udcqii55du4gju45bno3d155\"}",
    b"{\"DateCreated\": \"/Date(1451606501933)/\", \"SessionId\": \"\", \"DocumentId\": 1}",
    b"{\"DateCreated\": \"/Date(1451606501933)/\", \"SessionId\": \"a\", \"DocumentId\": 1.5}",
    b"{\"DateCreated\": \"/Date(915148800000)/\", \"SessionId\": \"a\", \"DocumentId\": 1}",
]


def build_batch(sample_path: Path, records: int, seed: int) -> list[bytes]:
    """`records` raw values: real sample records with their identifying fields varied."""
    templates = [json.loads(line) for line in sample_path.read_text("utf-8").splitlines()]
    rng = random.Random(seed)
    # Areas belong to documents, so the log repeats a finite set of area strings; 2,000
    # distinct ones (mixed spellings, leading comma or not) is more than a day holds.
    area_pool = [
        ("," if rng.random() < 0.8 else "")
        + ",".join(rng.sample(AREA_SPELLINGS, rng.randint(1, 3)))
        for _ in range(2_000)
    ]
    day_start_ms = 1_451_606_400_000
    values: list[bytes] = []
    for _ in range(records):
        if rng.random() < 0.02:
            values.append(rng.choice(BAD_LINES))
            continue
        record = dict(rng.choice(templates))
        record["DateCreated"] = f"/Date({day_start_ms + rng.randrange(86_400_000)})/"
        record["SessionId"] = "".join(rng.choices(SESSION_ALPHABET, k=24))
        record["DocumentId"] = rng.randrange(1, 12_000_000)
        record["ClinicalAreas"] = rng.choice(area_pool) if rng.random() < 0.88 else ""
        if rng.random() < 0.25:
            record["Documents"] = [rng.randrange(1, 12_000_000) for _ in range(20)]
        values.append(json.dumps(record, ensure_ascii=False).encode("utf-8"))
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--sample", type=Path, default=DEFAULT_SAMPLE)
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: elapsed time; cpu: this process's CPU time (steadier on a busy machine)",
    )
    args = parser.parse_args()

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as documented

    values = build_batch(args.sample, args.records, args.seed)
    context = pa.table(
        {
            "topic": pa.array(["tripclick_raw_logs"] * len(values)).dictionary_encode(),
            "partition": pa.array([0] * len(values), pa.int32()),
            "offset": pa.array(range(len(values)), pa.int64()),
        }
    )
    read_ms = 1_451_700_000_000
    result = parse_batch(values, context=context, read_ms=read_ms)  # warm-up
    assert result.clicks.num_rows + result.quarantine.num_rows == len(values)

    clock = time.perf_counter if args.clock == "wall" else time.process_time
    best = float("inf")
    for _ in range(args.repeat):
        started = clock()
        parse_batch(values, context=context, read_ms=read_ms)
        best = min(best, clock() - started)

    megabytes = sum(map(len, values)) / 1e6
    print(
        json.dumps(
            {
                "records": len(values),
                "seconds": round(best, 4),
                "records_per_s": round(len(values) / best),
                "mb_per_s": round(megabytes / best, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
