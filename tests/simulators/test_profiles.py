"""Device profiles: validation messages, and encode/decode against hand-computed vectors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from pymodbus.client.mixin import ModbusClientMixin

from releve.profiles import (
    DataType,
    ProfileError,
    RegisterEntry,
    decode,
    encode,
    load_profile,
    load_profile_file,
    parse_profile,
    profile_names,
)


def entry(data_type: str, order: str = "", scale: float = 1.0, offset: float = 0.0, rollover: bool = False):
    return RegisterEntry(
        name="x",
        channel="1-0:1.8.0",
        function=4,
        address=0,
        data_type=DataType(data_type),
        order=order,
        scale=scale,
        offset=offset,
        kind="cumulative",
        rollover=rollover,
    )


VECTORS = [
    ("float32", "ABCD", 230.0, [0x4366, 0x0000]),
    ("float32", "CDAB", 230.0, [0x0000, 0x4366]),
    ("float32", "BADC", 230.0, [0x6643, 0x0000]),
    ("float32", "DCBA", 230.0, [0x0000, 0x6643]),
    ("uint32", "ABCD", 0x12345678, [0x1234, 0x5678]),
    ("uint32", "CDAB", 0x12345678, [0x5678, 0x1234]),
    ("uint32", "BADC", 0x12345678, [0x3412, 0x7856]),
    ("uint32", "DCBA", 0x12345678, [0x7856, 0x3412]),
    ("int32", "CDAB", -1, [0xFFFF, 0xFFFF]),
    ("int32", "ABCD", -2, [0xFFFF, 0xFFFE]),
    ("int16", "AB", -2, [0xFFFE]),
    ("int16", "BA", -2, [0xFEFF]),
    ("uint16", "BA", 0x1234, [0x3412]),
    ("int64", "ABCD", 0x0102030405060708, [0x0102, 0x0304, 0x0506, 0x0708]),
    ("int64", "CDAB", 0x0102030405060708, [0x0708, 0x0506, 0x0304, 0x0102]),
    ("uint64", "BADC", 0x0102030405060708, [0x0201, 0x0403, 0x0605, 0x0807]),
    ("uint64", "DCBA", 0x0102030405060708, [0x0807, 0x0605, 0x0403, 0x0201]),
    ("float64", "ABCD", 1.0, [0x3FF0, 0, 0, 0]),
    ("float64", "DCBA", 1.0, [0, 0, 0, 0xF03F]),
]


@pytest.mark.parametrize(("data_type", "order", "value", "registers"), VECTORS)
def test_encode_matches_hand_computed_vector_and_decodes_back(data_type, order, value, registers):
    e = entry(data_type, order)
    assert encode(e, value) == registers
    assert decode(e, registers) == pytest.approx(value, rel=1e-15)


def test_scaled_word_swapped_wh_register_reads_as_kwh():
    e = entry("uint32", "CDAB", scale=0.001)
    # 12345.678 kWh = 12 345 678 Wh = 0x00BC614E, low word first on the wire.
    assert encode(e, 12345.678) == [0x614E, 0x00BC]
    assert decode(e, [0x614E, 0x00BC]) == pytest.approx(12345.678)


def test_offset_is_applied_both_ways():
    e = entry("int16", scale=0.1, offset=-40.0)
    assert encode(e, 20.0) == [600]
    assert decode(e, [600]) == pytest.approx(20.0)


def test_rolling_counter_wraps_instead_of_overflowing():
    e = entry("uint16", scale=0.1, rollover=True)
    assert e.wrap == pytest.approx(6553.6)
    assert encode(e, 6553.7) == [1]
    with pytest.raises(ValueError, match="does not fit"):
        encode(entry("uint16", scale=0.1), 6553.7)


@pytest.mark.parametrize("data_type", [t.value for t in DataType])
@pytest.mark.parametrize("order", ["ABCD", "CDAB", "BADC", "DCBA", "AB", "BA"])
def test_every_type_and_order_round_trips(data_type, order):
    width16 = data_type in ("int16", "uint16")
    if width16 != (len(order) == 2):
        with pytest.raises(ValueError, match="not valid"):
            entry(data_type, order)
        return
    e = entry(data_type, order, scale=0.01)
    rng = np.random.default_rng(7)
    signed = data_type.startswith("int") or data_type.startswith("float")
    bits = 16 * e.count
    top = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
    top = min(top, 2**52)  # exactly representable raw counts
    low = -top if signed else 0
    for raw in [0, 1, top, low, *rng.integers(low, top, 50, endpoint=True).tolist()]:
        value = raw * 0.01
        back = decode(e, encode(e, value))
        tolerance = abs(value) * 1e-6 if data_type == "float32" else 1e-9 * max(1.0, abs(value))
        assert math.isclose(back, value, abs_tol=max(tolerance, 0.011 if "32" in data_type else 0))


@pytest.mark.parametrize(("order", "word_order"), [("ABCD", "big"), ("CDAB", "little")])
def test_word_orders_agree_with_pymodbus(order, word_order):
    e = entry("float32", order)
    regs = encode(e, 1234.5)
    assert ModbusClientMixin.convert_from_registers(
        regs, ModbusClientMixin.DATATYPE.FLOAT32, word_order=word_order
    ) == pytest.approx(1234.5)


def test_shipped_profiles_load_and_keep_the_eastron_offsets():
    assert set(profile_names()) >= {"sdm120", "sdm630", "gen-int32cdab", "gen-counter16", "water-ultrasonic"}
    sdm = load_profile("sdm630")
    offsets = {e.channel: (e.function, e.address, e.data_type.value, e.order) for e in sdm.registers}
    assert offsets["1-0:32.7.0"] == (4, 0, "float32", "ABCD")
    assert offsets["1-0:31.7.0"][1] == 6
    assert offsets["1-0:1.7.0"][1] == 52
    assert offsets["1-0:14.7.0"][1] == 70
    assert offsets["1-0:1.8.0"][1] == 72
    assert offsets["1-0:2.8.0"][1] == 74
    assert offsets["1-0:15.8.0"][1] == 342
    assert sdm.serial is not None
    assert sdm.serial.addresses == [42, 44]
    regs = sdm.serial_registers(26000123)
    # Serial Number Hi and Lo, one 16-bit register each, as real Eastron meters keep it.
    assert set(regs) == {(3, 42), (3, 44)}
    assert regs[(3, 42)] * 65536 + regs[(3, 44)] == 26000123
    water = load_profile("water-ultrasonic")
    assert water.status_word({"reverse_flow", "leak"}) == 0b101


BASE = {
    "model": "bad",
    "commodity": "electricity",
    "registers": [
        {
            "name": "e",
            "channel": "1-0:1.8.0",
            "function": 4,
            "address": 0,
            "data_type": "float32",
            "kind": "cumulative",
        },
    ],
}


def _with(**register_changes):
    data = {**BASE, "registers": [{**BASE["registers"][0], **register_changes}]}
    return data


@pytest.mark.parametrize(
    ("data", "field", "problem"),
    [
        (_with(order="AB"), "registers.0", "not valid for float32"),
        (_with(channel="1-0:99.9.9"), "registers.0.channel", "unknown channel"),
        (_with(function=6), "registers.0.function", "Input should be 3 or 4"),
        (_with(data_type="float16"), "registers.0.data_type", "Input should be"),
        (_with(scale=0), "registers.0.scale", "non-zero"),
        (_with(rollover=True), "registers.0", "unsigned integer"),
        ({**BASE, "commodity": "gas"}, "commodity", "Input should be"),
        ({**BASE, "registers": BASE["registers"] * 2}, "(profile)", "duplicate name"),
        ({**BASE, "status_bits": {"tamper": 1}}, "status_bits", "not an EventKind"),
    ],
)
def test_bad_profile_names_origin_field_and_problem(data, field, problem):
    with pytest.raises(ProfileError) as info:
        parse_profile(data, "bad.toml")
    message = str(info.value)
    assert message.startswith("bad.toml: invalid profile:")
    assert field in message
    assert problem in message


def test_overlapping_registers_are_rejected(tmp_path: Path):
    path = tmp_path / "overlap.toml"
    path.write_text(
        'model = "overlap"\ncommodity = "water"\n'
        '[[registers]]\nname = "a"\nchannel = "8-0:1.0.0"\nfunction = 3\naddress = 0\n'
        'data_type = "uint32"\nkind = "cumulative"\n'
        '[[registers]]\nname = "b"\nchannel = "8-0:2.0.0"\nfunction = 3\naddress = 1\n'
        'data_type = "uint16"\nkind = "cumulative"\n'
    )
    with pytest.raises(ProfileError, match=r"overlap\.toml: .*'b' overlaps 'a' at function 3 address 1"):
        load_profile_file(path)


def test_file_errors_name_the_file(tmp_path: Path):
    broken = tmp_path / "broken.toml"
    broken.write_text("model = \n")
    with pytest.raises(ProfileError, match=r"broken\.toml: not valid TOML"):
        load_profile_file(broken)
    renamed = tmp_path / "other.toml"
    renamed.write_text((Path(__file__).parents[2] / "releve/profiles/sdm120.toml").read_text())
    with pytest.raises(ProfileError, match="model: 'sdm120' does not match the file name 'other'"):
        load_profile_file(renamed)
    with pytest.raises(ProfileError, match="no profile for model 'nope'"):
        load_profile("nope")
