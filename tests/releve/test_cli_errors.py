"""Expected failures end in one line on stderr and exit code 1; the traceback only with -v."""

import subprocess
import sys

import pytest

from releve.pgserver import free_port

CASES = {
    "unreachable": (f"postgresql://postgres@127.0.0.1:{free_port()}/releve", "cannot reach the database"),
    "malformed": ("not a url at all", "the database URL is not valid"),
    "bad option": ("postgresql://127.0.0.1/releve?sslmode=sometimes", "the database URL is not valid"),
}


def releve(*args, url):
    return subprocess.run(
        [sys.executable, "-m", "releve.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "RELEVE_DATABASE_URL": url},
        check=False,
    )


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("command", [("db", "status"), ("ingest", "load", ".")])
def test_a_bad_database_url_is_one_line_and_exit_1(case, command):
    url, expected = CASES[case]
    result = releve(*command, url=url)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"releve {command[0]}: {expected}"), result.stderr
    assert "Traceback" not in result.stderr


def test_verbose_adds_the_traceback():
    url, expected = CASES["unreachable"]
    result = releve("-v", "db", "status", url=url)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and result.stderr.strip().splitlines()[-1].startswith(f"releve db: {expected}")


@pytest.mark.parametrize(
    "command",
    [
        ("db", "url"),
        ("command", "list"),
        ("vee", "review", "list"),
        ("theft", "report"),
        ("bill", "notes", "--run", "1"),
    ],
)
def test_an_embedded_server_that_cannot_start_is_one_line_and_exit_1_in_every_package(command, tmp_path):
    # Each package's CLI takes its URL from releve.cli.db_url: the same message for all of them.
    data_dir = tmp_path / "pg"
    data_dir.mkdir()
    (data_dir / "PG_VERSION").write_text("99\n")  # a data directory no server can start on
    result = subprocess.run(
        [sys.executable, "-m", "releve.cli", *command],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
        env={"PATH": "/usr/bin:/bin", "RELEVE_DATABASE__DATA_DIR": str(data_dir)},
    )
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"releve {command[0]}: PostgreSQL in {data_dir} did not start")
    assert "Traceback" not in result.stderr
