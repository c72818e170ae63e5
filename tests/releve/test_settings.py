import tomllib

import pytest

from releve.settings import SettingsError, load_settings, sample_toml


def test_defaults_apply_without_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.database.url == ""
    assert settings.ingest.batch_rows == 50_000
    assert (settings.dashboard.host, settings.dashboard.port) == ("127.0.0.1", 8050)  # loopback unless told


def test_environment_overrides_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "releve.toml").write_text('[ingest]\nbatch_rows = 10\n[database]\nurl = "postgresql://file/db"\n')
    monkeypatch.setenv("RELEVE_INGEST__BATCH_ROWS", "20")
    settings = load_settings()
    assert settings.ingest.batch_rows == 20
    assert settings.database.url == "postgresql://file/db"


def test_database_url_shorthand_variable(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RELEVE_DATABASE_URL", "postgresql://env/db")
    assert load_settings().database.url == "postgresql://env/db"


def test_bad_value_names_the_file_and_the_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "releve.toml").write_text("[ingest]\nbatch_rows = -3\n")
    with pytest.raises(SettingsError, match=r"releve.toml.*ingest.batch_rows"):
        load_settings()


def test_unknown_key_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "releve.toml").write_text("[ingest]\nbatch_rowz = 3\n")
    with pytest.raises(SettingsError, match="batch_rowz"):
        load_settings()


def test_broken_toml_names_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "releve.toml").write_text("[ingest\n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings()


def test_sample_file_is_valid_and_loads_to_the_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = sample_toml()
    parsed = tomllib.loads(text)
    assert parsed["ingest"]["batch_rows"] == 50_000
    (tmp_path / "releve.toml").write_text(text)
    assert load_settings().model_dump() == load_settings().model_copy().model_dump()
