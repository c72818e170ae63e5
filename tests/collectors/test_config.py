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
    path.write_text('[modbus]\n[[modbus.gateways]]\nname = "g"\nhost = "h"\nmeters = [{serial = "1", unit = 1, profile = "nope"}]\n')
    with pytest.raises(ConfigError, match=r"c.toml: modbus.gateways.0.meters.0.profile: .*no profile for model 'nope'"):
        load_config(path)


def test_two_meters_on_one_unit_id_are_refused(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[modbus]\n[[modbus.lines]]\nname = "l"\nport = "/dev/x"\n'
                    'meters = [{serial = "1", unit = 3, profile = "sdm120"}, {serial = "2", unit = 3, profile = "sdm120"}]\n')
    with pytest.raises(ConfigError, match="share a unit id"):
        load_config(path)


def test_a_bad_topic_template_is_refused(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[mqtt]\n[[mqtt.subscriptions]]\ntopic = "a/#/b"\n')
    with pytest.raises(ConfigError, match="'#' must be the last level"):
        load_config(path)
