"""The main register of each commodity has one home, releve/model.py, and it agrees with the channel table."""

from releve.model import CHANNELS, COMMODITY_CHANNELS, MAIN_REGISTER, MAIN_REGISTERS, ChannelKind, Commodity


def test_every_commodity_names_known_channels_of_the_right_kind_and_unit():
    assert set(COMMODITY_CHANNELS) == set(Commodity)
    for channels in COMMODITY_CHANNELS.values():
        assert CHANNELS[channels.register].kind is ChannelKind.REGISTER
        assert CHANNELS[channels.export].kind is ChannelKind.REGISTER
        assert CHANNELS[channels.interval].kind is ChannelKind.INTERVAL
        assert {CHANNELS[c].unit for c in (channels.register, channels.export, channels.interval)} == {channels.unit}


def test_the_main_register_is_found_by_the_commodity_or_its_database_value():
    assert MAIN_REGISTER["electricity"] == MAIN_REGISTER[Commodity.ELECTRICITY] == "1-0:1.8.0"
    assert MAIN_REGISTER["water"] == "8-0:1.0.0"
    assert set(MAIN_REGISTERS) == {"1-0:1.8.0", "8-0:1.0.0"}
