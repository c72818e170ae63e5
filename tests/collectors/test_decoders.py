"""Decoders against test vectors kept as data (tests/collectors/vectors): add a case by adding a file."""

import json
from datetime import datetime
from pathlib import Path

import pytest

from collectors.config import compile_topic
from collectors.decoders import DecodeError, Message, get_decoder

VECTORS = sorted((Path(__file__).parent / "vectors").glob("*.json"))


def load(path):
    case = json.loads(path.read_text())
    payload = case["raw"].encode() if "raw" in case else json.dumps(case["payload"]).encode()
    _, pattern = compile_topic(case["template"])
    match = pattern.match(case["topic"])
    assert match, f"{path.name}: template does not match topic"
    return case, Message(case["topic"], payload, match.groupdict(), case.get("options", {}))


@pytest.mark.parametrize("path", [p for p in VECTORS if "error" not in json.loads(p.read_text())], ids=lambda p: p.stem)
def test_vector_decodes_to_expected_readings_and_events(path):
    case, message = load(path)
    out = get_decoder(case["decoder"])(message)
    assert [[r.meter, r.channel, r.ts.isoformat(), r.value, r.unit] for r in out.readings] == case["readings"]
    assert [[e.meter, e.ts.isoformat(), e.kind.value] for e in out.events] == case["events"]


@pytest.mark.parametrize("path", [p for p in VECTORS if "error" in json.loads(p.read_text())], ids=lambda p: p.stem)
def test_bad_vector_fails_with_a_message_that_says_what(path):
    case, message = load(path)
    with pytest.raises(DecodeError) as info:
        get_decoder(case["decoder"])(message)
    assert case["error"] in str(info.value)


def test_topic_templates_compile_to_filters_and_capture_fields():
    assert compile_topic("tele/sml-{serial}/SENSOR")[0] == "tele/+/SENSOR"
    topic_filter, pattern = compile_topic("v3/{app}/devices/water-{serial}/up")
    assert topic_filter == "v3/+/devices/+/up"
    assert pattern.match("v3/a@ttn/devices/water-9/up").groupdict() == {"app": "a@ttn", "serial": "9"}
    assert pattern.match("v3/a@ttn/devices/gas-9/up") is None
    assert compile_topic("site/#")[0] == "site/#"
    with pytest.raises(ValueError, match="last level"):
        compile_topic("a/#/b")


def test_a_decoder_can_be_added_by_module_path():
    decode = get_decoder("tests.collectors.custom_decoder:decode_csv_line")
    out = decode(Message("x/7", b"1-0:1.8.0;2026-01-01T00:00:00Z;12.5", {"serial": "7"}))
    assert [(r.meter, r.value, r.ts) for r in out.readings] == [
        ("7", 12.5, datetime.fromisoformat("2026-01-01T00:00:00+00:00"))
    ]


def test_unknown_decoder_names_the_known_ones():
    with pytest.raises(ValueError, match="json, tasmota, ttn"):
        get_decoder("nope")
