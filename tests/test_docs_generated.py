"""The protocol reference in docs/ is generated from the declarations and must not drift."""

from pathlib import Path

from tomoweave.docs import protocols_markdown
from tomoweave.engine.registry import installed_protocols

DOCS = Path(__file__).resolve().parents[1] / "docs" / "protocols.md"


def test_protocol_reference_matches_the_declarations():
    assert DOCS.read_text().rstrip() == protocols_markdown().rstrip(), (
        "docs/protocols.md is stale: run `tomoweave protocols --markdown > docs/protocols.md`")


def test_every_parameter_of_every_protocol_has_help_text():
    missing = [f"{name}.{field}" for name, cls in installed_protocols().items()
               for field, info in cls.Params.model_fields.items() if not info.description]
    assert missing == []
