"""Docs that are generated or exemplary must match the code."""

from pathlib import Path

from polectl.configdoc import render

from edge_controller.config import load

ROOT = Path(__file__).resolve().parents[2]


def test_config_reference_is_current() -> None:
    on_disk = (ROOT / "docs" / "config.md").read_text()
    assert on_disk == render(), "docs/config.md is stale: run `polectl config doc > docs/config.md`"


def test_example_config_is_valid() -> None:
    cfg = load(ROOT / "docs" / "examples" / "pole.toml")
    assert cfg.pole.id == "pole-0042" and cfg.mqtt.tls


def test_link_doc_lists_every_catalogue_message() -> None:
    from edge_controller.link import codec

    text = (ROOT / "docs" / "link.md").read_text()
    for mid, name, _codes, fields in codec.MESSAGES:
        assert f"| 0x{mid:02X} | `{name}` |" in text, name
        for f in fields:
            assert f in text, (name, f)
