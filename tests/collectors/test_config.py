from pathlib import Path

import pytest

from collectors.config import ConfigError, load_config

EXAMPLE = Path(__file__).resolve().parents[2] / "collectors" / "collector.example.toml"


def test_the_shipped_example_configuration_loads():
    config = load_config(EXAMPLE)
    assert config.mqtt is not None and len(config.mqtt.subscriptions) == 4
    assert config.modbus is not None and config.modbus.gateways[0].meters[0].profile == "sdm630"


def test_a_bad_profile_name_fails_naming_the_file_and_the_field(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(
        '[modbus]\n[[modbus.gateways]]\nname = "g"\nhost = "h"\nmeters = [{serial = "1", unit = 1, profile = "nope"}]\n'
    )
    with pytest.raises(ConfigError, match=r"c.toml: modbus.gateways.0.meters.0.profile: .*no profile for model 'nope'"):
        load_config(path)


def test_two_meters_on_one_unit_id_are_refused(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(
        '[modbus]\n[[modbus.lines]]\nname = "l"\nport = "/dev/x"\n'
        'meters = [{serial = "1", unit = 3, profile = "sdm120"}, {serial = "2", unit = 3, profile = "sdm120"}]\n'
    )
    with pytest.raises(ConfigError, match="share a unit id"):
        load_config(path)


def test_a_bad_topic_template_is_refused(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[mqtt]\n[[mqtt.subscriptions]]\ntopic = "a/#/b"\n')
    with pytest.raises(ConfigError, match="'#' must be the last level"):
        load_config(path)


def test_a_serialising_gateway_gets_one_connection_and_a_line_drains_for_its_timeout_by_default(tmp_path):
    from collectors.modbus import RtuLine, TcpGateway
    from collectors.service import build_poller

    path = tmp_path / "c.toml"
    path.write_text(
        "[modbus]\n"
        '[[modbus.gateways]]\nname = "rs485"\nhost = "h"\nmax_connections = 8\nserialise = true\n'
        'meters = [{serial = "1", unit = 1, profile = "sdm120"}]\n'
        '[[modbus.gateways]]\nname = "tcp"\nhost = "h"\nmax_connections = 8\n'
        'meters = [{serial = "2", unit = 1, profile = "sdm120"}]\n'
        '[[modbus.lines]]\nname = "l1"\nport = "/dev/x"\ntimeout_s = 0.5\n'
        'meters = [{serial = "3", unit = 1, profile = "sdm120"}]\n'
        '[[modbus.lines]]\nname = "l2"\nport = "/dev/y"\ntimeout_s = 0.5\ndrain_s = 2.0\n'
        'meters = [{serial = "4", unit = 1, profile = "sdm120"}]\n'
    )
    config = load_config(path)
    assert config.modbus is not None
    links = {link.name: link for link, _ in build_poller(config.modbus, lambda *a: None).links}  # type: ignore[arg-type]
    assert isinstance(links["rs485"], TcpGateway) and links["rs485"].max_connections == 1
    assert isinstance(links["tcp"], TcpGateway) and links["tcp"].max_connections == 8
    assert isinstance(links["l1"], RtuLine) and links["l1"].drain == 0.5
    assert isinstance(links["l2"], RtuLine) and links["l2"].drain == 2.0


def test_a_drain_that_is_not_positive_is_refused(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(
        '[modbus]\n[[modbus.lines]]\nname = "l"\nport = "/dev/x"\ndrain_s = 0\n'
        'meters = [{serial = "1", unit = 3, profile = "sdm120"}]\n'
    )
    with pytest.raises(ConfigError, match=r"c.toml: modbus.lines.0.drain_s: .*greater than 0"):
        load_config(path)
