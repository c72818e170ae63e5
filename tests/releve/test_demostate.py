"""The demo's state file points every other command at the demo's database (pure logic, no servers)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from releve import demostate
from releve.settings import Settings


@pytest.fixture
def state_path(tmp_path, monkeypatch):
    path = tmp_path / "var" / "releve-demo.json"
    monkeypatch.setenv("RELEVE_DEMO_STATE", str(path))
    return path


def test_a_running_demo_gives_its_url_and_broker(state_path):
    demostate.write(
        demostate.DemoState(
            pid=os.getpid(),
            database_url="postgresql://demo@127.0.0.1:5999/releve",
            database_data_dir="/x/pg",
            mqtt_url="mqtt://127.0.0.1:1999",
        )
    )
    settings = Settings()
    assert demostate.apply(settings) is not None
    assert settings.database.url == "postgresql://demo@127.0.0.1:5999/releve"
    assert settings.mqtt.url == "mqtt://127.0.0.1:1999"
    assert state_path.stat().st_mode & 0o077 == 0  # it names a password file: the owner's only


def test_a_stopped_demo_gives_its_embedded_data_directory(state_path):
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(done.stdout)  # a process that has exited
    demostate.write(demostate.DemoState(pid=dead, database_url="postgresql://gone/releve", database_data_dir="/x/pg"))
    settings = Settings()
    demostate.apply(settings)
    assert settings.database.url == ""
    assert settings.database.data_dir == Path("/x/pg")


def test_mark_stopped_forgets_the_live_urls_but_keeps_the_data(state_path):
    demostate.write(
        demostate.DemoState(pid=os.getpid(), database_url="postgresql://u@h/releve", database_data_dir="/x/pg")
    )
    demostate.mark_stopped()
    state = demostate.read()
    assert state is not None and state.pid == 0 and state.database_url == ""
    settings = Settings()
    demostate.apply(settings)
    assert settings.database.data_dir == Path("/x/pg")


def test_explicit_settings_win_over_the_demo(state_path):
    demostate.write(demostate.DemoState(pid=os.getpid(), database_url="postgresql://demo/releve"))
    settings = Settings(database={"url": "postgresql://prod/releve"})
    assert demostate.apply(settings) is None
    assert settings.database.url == "postgresql://prod/releve"
    explicit_dir = Settings(database={"data_dir": "/mine"})
    demostate.write(demostate.DemoState(pid=0, database_url="", database_data_dir="/x/pg"))
    demostate.apply(explicit_dir)
    assert explicit_dir.database.data_dir == Path("/mine")


def test_no_state_or_a_broken_file_changes_nothing(state_path):
    assert demostate.apply(Settings()) is None
    state_path.parent.mkdir(parents=True)
    state_path.write_text("{not json")
    settings = Settings()
    assert demostate.apply(settings) is None
    assert settings.database.url == ""
