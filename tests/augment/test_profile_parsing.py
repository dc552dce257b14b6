"""Profile answers: complete JSON, JSON cut off by max_tokens, and plain text; the guided schema."""

from __future__ import annotations

import json

from bridgerec.augment.profiles import parse_profile, parses_as_profile, profile_schema
from bridgerec.llm.engine import GenerationParams, vllm_sampling_kwargs


def test_complete_cut_and_plain_answers():
    assert parse_profile('Sure: {"summarization": "likes rockets", "reasoning": "space items"} done') == \
        ("likes rockets", "space items")
    assert parse_profile('{"summarization": "likes \\"space\\" rock') == ('likes "space" rock', "")
    assert parse_profile('{"summarization": "a", "reasoning": "b') == ("a", "b")
    assert parse_profile("  just a sentence ") == ("just a sentence", "")
    assert parses_as_profile('{"summarization": "a"}') and not parses_as_profile('{"summarization": "a')
    assert not parses_as_profile('{"summary": "a"}')


def test_schema_reaches_vllm_as_structured_outputs():
    schema = profile_schema(240, 120)
    assert schema["required"] == ["summarization", "reasoning"]
    assert schema["properties"]["summarization"]["maxLength"] == 240
    params = GenerationParams(max_tokens=8, json_schema=json.dumps(schema))
    d = params.to_dict()
    assert GenerationParams().replace(**d) == params  # the JSON form round-trips (Ray Data rows carry it)
    kw = vllm_sampling_kwargs(d)
    assert kw["structured_outputs"] == {"json": schema, "disable_any_whitespace": True} and "json_schema" not in kw
    assert "json_schema" not in GenerationParams().to_dict()  # unchanged cache keys without a schema
