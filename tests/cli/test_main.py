"""The command table: `tripflow --help` lists every command with its own help, without
importing the command modules; running one loads only that one."""

from __future__ import annotations

import json
import subprocess
import sys

import typer.main
from typer.testing import CliRunner

from tripflow.cli import main


def _first_paragraph(text: str | None) -> str:
    return (text or "").strip().split("\n\n")[0].strip()


def test_every_command_is_listed_with_its_own_help() -> None:
    listed = typer.main.get_command(main.app)
    assert list(listed.commands) == list(main.COMMANDS)  # type: ignore[attr-defined]
    for name in main.COMMANDS:
        real = main._click_command(name)
        assert real.name == name
        assert _first_paragraph(main.COMMANDS[name].help) == _first_paragraph(real.help), name
    # What the dashboards' pipeline check reads.
    assert {c.name for c in main.app.registered_commands} == set(main.COMMANDS)


def test_help_imports_no_command_module_and_a_command_only_its_own() -> None:
    probe = (
        "import json, sys\n"
        "from typer.testing import CliRunner\n"
        "from tripflow.cli.main import app\n"
        "args = sys.argv[1:]\n"
        "result = CliRunner().invoke(app, args)\n"
        "assert result.exit_code == 0, result.output\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('tripflow.cli.')"
        " or m.split('.')[0] in ('pyarrow', 'duckdb', 'deltalake', 'psycopg',"
        " 'confluent_kafka', 'numpy'))))\n"
    )
    def loaded(*args: str) -> list[str]:
        return json.loads(subprocess.run([sys.executable, "-c", probe, *args],
                                         capture_output=True, text=True, check=True).stdout)

    assert loaded("--help") == ["tripflow.cli.main"]
    silver = loaded("silver", "--help")
    assert "tripflow.cli.batch" in silver
    assert not {"tripflow.cli.produce", "tripflow.cli.dashboards", "tripflow.cli.cdc",
                "confluent_kafka"} & set(silver)


def test_group_and_unknown_command() -> None:
    result = CliRunner().invoke(main.app, ["services", "--help"])
    assert result.exit_code == 0 and "status" in result.output and "up" in result.output
    result = CliRunner().invoke(main.app, ["silvr"])
    assert result.exit_code == 2 and "silver" in result.output


def test_batch_size_defaults_are_the_library_defaults() -> None:
    """The CLI's size options default to what each step was measured with (issue 20): a
    stale literal here would run every user's batch at another memory bound."""
    import inspect

    from tripflow.cli import batch
    from tripflow.marts import run as marts_run
    from tripflow.processing import bronze, silver

    def option_default(command: object, name: str) -> object:
        return inspect.signature(command).parameters[name].default.default  # type: ignore[arg-type]

    run_bronze_default = inspect.signature(bronze.run_bronze).parameters["max_batch_rows"].default
    assert option_default(batch.bronze, "batch_rows") == run_bronze_default == 100_000
    assert option_default(batch.silver, "chunk_rows") == silver.CHUNK_ROWS == 80_000
    assert option_default(batch.marts, "chunk_rows") == marts_run.CHUNK_ROWS == 400_000


def _leave_probe(body: str) -> subprocess.CompletedProcess[str]:
    """A Python process that registers an exit handler, writes unflushed output, runs
    `body` and then calls main.leave(3)."""
    probe = (
        "import atexit, os, sys, threading, time\n"
        "from tripflow.cli.main import leave\n"
        "class Teardown:\n"
        "    def __del__(self):\n"
        "        os.write(1, b'teardown;')\n"
        "kept = Teardown()  # deleted only by the interpreter's teardown\n"
        "atexit.register(lambda: print('handler ran'))\n"
        "sys.stdout.write('unflushed;')\n"
        f"{body}\n"
        "leave(3)\n"
    )
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60)


def test_leave_runs_the_exit_handlers_and_flushes_then_skips_the_teardown() -> None:
    done = _leave_probe("pass")
    assert done.returncode == 3
    assert done.stdout == "unflushed;handler ran\n"  # no "teardown;"


def test_leave_waits_for_a_thread_still_at_work() -> None:
    done = _leave_probe(
        "threading.Thread(target=lambda: (time.sleep(0.5), print('thread done;'))).start()")
    assert done.returncode == 3
    assert done.stdout == "unflushed;thread done;\nhandler ran\nteardown;"  # as usual


def test_leave_with_stdout_closed_keeps_the_exit_code() -> None:
    probe = "from tripflow.cli.main import leave\nleave(3)\n"
    done = subprocess.run(["sh", "-c", 'exec "$0" -c "$1" >&-', sys.executable, probe],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr


def test_the_command_line_ends_with_the_command_s_exit_code() -> None:
    for args, code in ((["--help"], 0), (["silver", "--dates", "nope"], 2), (["nosuch"], 2)):
        done = subprocess.run([sys.executable, "-m", "tripflow", *args], capture_output=True,
                              text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert done.returncode == code, (args, done.stdout, done.stderr)
    assert "Usage: tripflow" in subprocess.run(
        [sys.executable, "-m", "tripflow", "--help"], capture_output=True, text=True,
        timeout=60).stdout


def test_a_profiled_command_still_gets_its_report() -> None:
    """Under a profiler `leave` exits as usual, so the profiler's report is printed."""
    done = subprocess.run([sys.executable, "-m", "cProfile", "-m", "tripflow", "--help"],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0 and "Usage: tripflow" in done.stdout
    assert "function calls" in done.stdout
