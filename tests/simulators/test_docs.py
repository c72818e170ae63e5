"""The documentation and the sample fleet file cannot drift from the code."""

from __future__ import annotations

from pathlib import Path

from releve.profiles import markdown_register_maps
from simulators.config import FleetConfig, load_fleet
from simulators.injections import markdown_table

ROOT = Path(__file__).parents[2]
DOC = (ROOT / "docs/simulators.md").read_text()
EXAMPLE = ROOT / "simulators/fleet.example.toml"


def test_example_fleet_file_shows_the_defaults():
    assert load_fleet(EXAMPLE) == FleetConfig()


def test_docs_embed_the_example_fleet_file():
    body = EXAMPLE.read_text()
    assert body[body.index("seed = 42") :] in DOC


def test_docs_register_maps_are_generated_from_the_profiles():
    start = DOC.index("<!-- register maps: generated -->\n") + len("<!-- register maps: generated -->\n")
    end = DOC.index("<!-- end of register maps -->")
    assert DOC[start:end] == markdown_register_maps()


def test_docs_injection_table_is_generated_from_the_injection_entries():
    assert markdown_table() in DOC
