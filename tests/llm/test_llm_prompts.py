"""The one prompt module: versions, rendering, and identical token ids for training and serving."""

from __future__ import annotations

import pytest

from bridgerec.llm import prompts as P

HISTORY = [P.ItemView(3, "The Galaxy Rocket #3", "A story about the galaxy and the rocket.", 5.0),
           P.ItemView(7, "Bread and the Oven #7", "An honest guide to bread with notes on oven.", 2.0)]
TARGET = P.ItemView(9, "Beyond the Orbit #9", "It mixes orbit, comet and a little moon.")


def _all_prompts() -> list[P.Prompt]:
    return [
        P.user_profile_prompt(HISTORY),
        P.item_profile_prompt(TARGET, HISTORY, 12),
        P.next_item_prompt(HISTORY),
        P.ranking_prompt(HISTORY, [TARGET, HISTORY[0]], similar=[HISTORY[1]], hint=[TARGET]),
        P.rating_prompt(HISTORY, TARGET, scale=(1, 5)),
        P.pair_preference_prompt(HISTORY, TARGET, HISTORY[0]),
        P.attribute_prompt(TARGET, "text", {}),
        P.bdlm_prompt(4, HISTORY),
    ]


def test_every_kind_renders_without_trailing_whitespace_and_lists_its_items():
    prompts = _all_prompts()
    assert [p.kind for p in prompts] == list(P.PROMPT_KINDS)
    for p in prompts:
        assert p.text == p.text.rstrip() and p.version == "v1"
    assert prompts[0].iids == (3, 7)
    assert set(prompts[3].iids) == {3, 7, 9}
    assert '"The Galaxy Rocket #3" (rating 5): A story about the galaxy' in prompts[0].text


def test_the_rating_prompt_shows_ratings_and_keeps_the_tiny_tokenizer_corpus():
    """The rating template is left out of the tiny tokenizer's corpus (adding it would change the
    tiny backbone every pinned figure stands on): that is sound only while each of its words is
    already in the corpus."""
    import re

    p = P.rating_prompt(HISTORY, TARGET, scale=(1, 5))
    assert '"Bread and the Oven #7" (rating 2)' in p.text and '"Beyond the Orbit #9"' in p.text
    assert "from 1 to 5" in p.text and p.iids == (3, 7, 9) and P.rating_target(4.0) == " 4"
    words = lambda text: set(re.findall(r"[A-Za-z']+|\d|[^\sA-Za-z\d]", re.sub(r"\{\w+\}", " ", text)))
    corpus = words(" ".join(P.template_corpus()))
    for v in P.PROMPT_VERSIONS:
        for kind in P.CORPUS_EXCLUDED:
            assert words(P._TEMPLATES[v][kind]) <= corpus, (kind, words(P._TEMPLATES[v][kind]) - corpus)


def test_unknown_version_is_rejected():
    with pytest.raises(ValueError, match="unknown prompt version"):
        P.user_profile_prompt(HISTORY, version="v999")


def test_entity_tokens():
    assert P.user_token(12) == "<u_12>" and P.item_token(0) == "<i_0>"
    assert "<u_4>" in P.bdlm_prompt(4, HISTORY).text and "<i_7>" in P.bdlm_prompt(4, HISTORY).text
    with pytest.raises(ValueError):
        P.entity_token("x", 1)


def test_encode_example_masks_the_prompt_and_ends_with_eos(tokenizer):
    prompt = P.next_item_prompt(HISTORY).text
    ex = P.encode_example(tokenizer, prompt, P.next_item_target(TARGET))
    n = len(P.encode_prompt(tokenizer, prompt))
    assert ex["labels"][:n] == [-100] * n
    assert ex["labels"][n:] == ex["input_ids"][n:]
    assert ex["input_ids"][-1] == tokenizer.eos_token_id
    short = P.encode_example(tokenizer, prompt, P.next_item_target(TARGET), max_length=n)
    assert len(short["input_ids"]) == n and short["input_ids"][-1] == tokenizer.eos_token_id


@pytest.mark.parametrize("engine_fixture", ["vllm_engine", "hf_engine"])
def test_training_and_serving_render_identical_token_ids(request, engine_fixture, tokenizer):
    """The prompt part of a training example is token-for-token what the engine encodes at inference."""
    from bridgerec.llm.engine import GenerationParams

    engine = request.getfixturevalue(engine_fixture)
    prompts = [P.next_item_prompt(HISTORY), P.ranking_prompt(HISTORY, [TARGET], hint=[TARGET]),
               P.user_profile_prompt(HISTORY)]
    gens = engine.generate([p.text for p in prompts], GenerationParams(max_tokens=1))
    for p, g in zip(prompts, gens):
        target = P.next_item_target(TARGET)
        train_ids = P.encode_example(tokenizer, p.text, target)["input_ids"]
        assert g.prompt_token_ids == train_ids[: len(g.prompt_token_ids)]
        assert len(train_ids) > len(g.prompt_token_ids)


@pytest.mark.parametrize("generated, title", [
    (P.next_item_target(TARGET), TARGET.title),  # the trained target reads back as the title
    (P.next_item_target(TARGET).lstrip(" "), TARGET.title),  # after a chat generation prompt
    ('"Half a title', "Half a title"),  # cut off by max_tokens before the closing quote
    ('\n\n  plain words\n"second line"', "plain words"),  # first non-empty line, unquoted
    ('The next item is: "A Band of Chorus #12".', "A Band of Chorus #12"),  # SmolLM2's way of answering
    ("   \n", ""),
])
def test_parse_next_item_inverts_the_target(generated, title):
    assert P.parse_next_item(generated) == title
