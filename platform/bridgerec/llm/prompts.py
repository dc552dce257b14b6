"""The one prompt module: versioned templates used by training, augmentation and serving alike.

Every prompt is rendered here and nowhere else, so the text (and hence the token ids) a model is
trained on is the text it is served with (BIGRec kept two copies of its prompt function that
drifted apart by a trailing space). Templates are grouped by version; a stored augmentation output
or a trained adapter records the version it used, and changing a template means adding a version.

Renderers return a :class:`Prompt`: the text plus the item ids it mentions (used by the leakage
check: no validation/test item of a user may appear in a prompt built from history).

Instruction-tuned backbones see every prompt inside their chat template (:class:`ChatFormat`, one
user turn and the assistant's generation prompt); ``tiny`` sees the plain text (:data:`PLAIN`).
:func:`engine_text` applies the format, and it is the only way a prompt reaches an engine, an
augmentation stage, a training example or a served request, so all of them see the same text.

Tokenisation of training examples is also here (:func:`encode_example`): the prompt is encoded
exactly as an engine encodes it at inference (special tokens included), and the target is encoded
separately and appended, so the prompt part of a training sequence is token-for-token identical to
what the engine sees, whatever merges the tokenizer would make across the prompt/target boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

__all__ = [
    "PROMPT_VERSIONS",
    "PROMPT_KINDS",
    "ItemView",
    "Prompt",
    "ChatFormat",
    "PLAIN",
    "engine_text",
    "entity_token",
    "user_token",
    "item_token",
    "user_profile_prompt",
    "item_profile_prompt",
    "next_item_prompt",
    "next_item_target",
    "parse_next_item",
    "ranking_prompt",
    "ranking_target",
    "rating_prompt",
    "rating_target",
    "CORPUS_EXCLUDED",
    "pair_preference_prompt",
    "PAIR_CHOICES",
    "attribute_prompt",
    "bdlm_prompt",
    "bdlm_target",
    "bdlm_title_target",
    "encode_prompt",
    "encode_example",
    "template_corpus",
]


@dataclass(frozen=True)
class ItemView:
    """What a prompt shows of an item."""

    iid: int
    title: str
    text: str = ""
    rating: Optional[float] = None


@dataclass(frozen=True)
class Prompt:
    """A rendered prompt: its text, its kind and version, and the item ids it mentions."""

    text: str
    kind: str
    version: str
    iids: tuple[int, ...] = ()


@dataclass(frozen=True)
class ChatFormat:
    """How a rendered prompt is wrapped for the backbone: ``prefix + text + suffix``.

    Taken from the tokenizer's chat template by rendering one user turn around a sentinel
    (:meth:`from_tokenizer`), so it is two plain strings: cheap to ship to Ray workers and part of
    the augmentation cache key. A template that puts the tokenizer's BOS in the text while the
    tokenizer also adds one on encoding would double it; the prefix drops that BOS."""

    prefix: str = ""
    suffix: str = ""

    @property
    def is_plain(self) -> bool:
        return not (self.prefix or self.suffix)

    def wrap(self, text: str) -> str:
        return f"{self.prefix}{text}{self.suffix}"

    def target(self, text: str) -> str:
        """A training target as it follows the wrapped prompt: plain prompts end in ':' and the
        target starts with a space; after a chat generation prompt the answer starts at once."""
        return text if self.is_plain else text.lstrip(" ")

    def to_dict(self) -> dict[str, str]:
        return {"prefix": self.prefix, "suffix": self.suffix}

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> "ChatFormat":
        """The format of ``tokenizer.chat_template`` (one user message, generation prompt on)."""
        sentinel = "\x00BRIDGEREC-PROMPT\x00"
        rendered = tokenizer.apply_chat_template([{"role": "user", "content": sentinel}], tokenize=False,
                                                 add_generation_prompt=True)
        if rendered.count(sentinel) != 1:
            raise ValueError("the tokenizer's chat template does not put the user message in verbatim once; "
                             "set llm.chat_template=off")
        prefix, suffix = rendered.split(sentinel)
        bos = getattr(tokenizer, "bos_token", None)
        ids = tokenizer("x", add_special_tokens=True)["input_ids"]
        if bos and prefix.startswith(bos) and ids and ids[0] == tokenizer.bos_token_id:
            prefix = prefix[len(bos):]  # the tokenizer adds it when the text is encoded
        return cls(prefix, suffix)


PLAIN = ChatFormat()
"""No wrapping (the ``tiny`` backbone, or ``llm.chat_template: off``)."""


def engine_text(prompt: "Prompt | str", chat: ChatFormat = PLAIN) -> str:
    """The text an engine receives for ``prompt``: the rendered prompt in the backbone's format."""
    return chat.wrap(prompt.text if isinstance(prompt, Prompt) else prompt)


PAIR_CHOICES = ("A", "B")
"""Answers of the pair-preference prompt; each must encode to a single token (checked by the stage)."""

# version -> kind -> template. Placeholders are filled by the renderers below; a template never
# ends in whitespace (a trailing space would be tokenised differently by different tokenizers).
_TEMPLATES: dict[str, dict[str, str]] = {
    "v1": {
        "user_profile": (
            "You summarize what a user enjoys from the items they interacted with.\n"
            "Items (title, rating, description):\n{history}\n"
            "First write a short summary of the user's preferences, then explain your reasoning.\n"
            'Answer in JSON: {{"summarization": "...", "reasoning": "..."}}\n'
            "Answer:"
        ),
        "item_profile": (
            "You summarize what kind of user would enjoy an item.\n"
            'Item: "{title}"\nDescription: {text}\nInteractions: {n_train}\n'
            "Users who chose it also chose:\n{co_items}\n"
            "First write a short summary of who enjoys this item, then explain your reasoning.\n"
            'Answer in JSON: {{"summarization": "...", "reasoning": "..."}}\n'
            "Answer:"
        ),
        "next_item": (
            "Given the items a user interacted with in order, name the next item.\n"
            "History:\n{history}\n"
            "Next item title:"
        ),
        "ranking": (
            "Rank the candidate items for a user from most to least likely to be chosen next.\n"
            "History:\n{history}\n"
            "{similar}"
            "{hint}"
            "Candidates:\n{candidates}\n"
            "Answer with the candidate numbers in order, separated by commas.\n"
            "Ranking:"
        ),
        "rating": (
            "A user interacted with these items:\n{history}\n"
            "Write the rating of this item for the user.\n"
            'Item: "{title}"\n'
            "Answer with a rating from {low} to {high}.\n"
            "Answer:"
        ),
        "ranking_similar": "Users with similar taste recently chose:\n{similar}\n",
        "ranking_hint": "A recommender model suggests, in order:\n{hint}\n",
        "pair": (
            "A user interacted with these items:\n{history}\n"
            'Which of the two items would the user prefer?\nA: "{title_a}"\nB: "{title_b}"\n'
            "Answer with A or B.\n"
            "Answer:"
        ),
        "attribute": (
            "Write the missing {column} of an item.\n"
            'Title: "{title}"\n{known}'
            "{column_title}:"
        ),
        "bdlm": (
            "User {user} interacted with:\n{history}\n"
            "Next item:"
        ),
    },
}

PROMPT_VERSIONS: tuple[str, ...] = tuple(_TEMPLATES)
"""Known template versions (config key llm.prompt_version)."""
PROMPT_KINDS: tuple[str, ...] = ("user_profile", "item_profile", "next_item", "ranking", "rating", "pair", "attribute",
                                 "bdlm")
"""Prompt kinds; every version defines all of them."""


def _template(version: str, kind: str) -> str:
    try:
        table = _TEMPLATES[version]
    except KeyError:
        raise ValueError(f"unknown prompt version {version!r}; known: {', '.join(PROMPT_VERSIONS)}") from None
    return table[kind]


def _clip(text: str, max_chars: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= max_chars else text[: max_chars - 3].rstrip() + "..."


def _quoted(item: ItemView) -> str:
    return f'"{item.title}"'


def _history_lines(history: Sequence[ItemView], max_text_chars: int, with_rating: bool = True) -> str:
    lines = []
    for it in history:
        line = f"- {_quoted(it)}"
        if with_rating and it.rating is not None:
            line += f" (rating {it.rating:g})"
        if max_text_chars > 0 and it.text:
            line += ": " + _clip(it.text, max_text_chars)
        lines.append(line)
    return "\n".join(lines) if lines else "- (none)"


# ----------------------------------------------------------------------------- entity tokens


def entity_token(kind: str, k: int) -> str:
    """``<u_k>`` for kind ``u`` (users) and ``<i_k>`` for kind ``i`` (items)."""
    if kind not in ("u", "i"):
        raise ValueError(f"entity kind must be 'u' or 'i', got {kind!r}")
    return f"<{kind}_{int(k)}>"


def user_token(uid: int) -> str:
    return entity_token("u", uid)


def item_token(iid: int) -> str:
    return entity_token("i", iid)


# ----------------------------------------------------------------------------- renderers


def user_profile_prompt(history: Sequence[ItemView], *, version: str = "v1", max_text_chars: int = 160) -> Prompt:
    """RLMRec user profile: summarize, then reason, from the user's (training) interactions."""
    text = _template(version, "user_profile").format(history=_history_lines(history, max_text_chars))
    return Prompt(text, "user_profile", version, tuple(int(h.iid) for h in history))


def item_profile_prompt(item: ItemView, co_items: Sequence[ItemView], n_train: int, *, version: str = "v1",
                        max_text_chars: int = 160) -> Prompt:
    """RLMRec item profile from the item's text and its (training) co-interactions."""
    text = _template(version, "item_profile").format(
        title=item.title, text=_clip(item.text, max_text_chars) or "(none)", n_train=int(n_train),
        co_items=_history_lines(co_items, 0, with_rating=False),
    )
    return Prompt(text, "item_profile", version, (int(item.iid),) + tuple(int(c.iid) for c in co_items))


def next_item_prompt(history: Sequence[ItemView], *, version: str = "v1") -> Prompt:
    """BIGRec: the history in order; the model generates the next item's title."""
    text = _template(version, "next_item").format(history=_history_lines(history, 0, with_rating=False))
    return Prompt(text, "next_item", version, tuple(int(h.iid) for h in history))


def next_item_target(item: ItemView) -> str:
    """BIGRec target: the quoted title after one space (the prompt ends in ':')."""
    return f" {_quoted(item)}"


def parse_next_item(text: str) -> str:
    """The title in a generated next-item answer (the inverse of :func:`next_item_target`): on the
    first non-empty line, the first double-quoted span (an instruction-tuned model may say
    ``The next item is: "Title"``), else the whole line; a title cut off before its closing
    quote is kept as far as it goes."""
    line = next((ln.strip() for ln in str(text).splitlines() if ln.strip()), "")
    start = line.find('"')
    if start >= 0:
        end = line.find('"', start + 1)
        quoted = line[start + 1:end] if end > 0 else line[start + 1:]
        line = quoted if quoted.strip() else line.replace('"', "")
    return line.strip()


def ranking_prompt(history: Sequence[ItemView], candidates: Sequence[ItemView], *,
                   similar: Sequence[ItemView] = (), hint: Sequence[ItemView] = (), version: str = "v1") -> Prompt:
    """Llama4Rec listwise ranking with prompt augmentation.

    ``similar``: recent items of similar users; ``hint``: the domain model's top-K in its order.
    Candidates are numbered from 1; the model answers with numbers.
    """
    sim = _template(version, "ranking_similar").format(similar=_history_lines(similar, 0, False)) if similar else ""
    hin = _template(version, "ranking_hint").format(hint=_history_lines(hint, 0, False)) if hint else ""
    cands = "\n".join(f"[{n}] {_quoted(c)}" for n, c in enumerate(candidates, 1))
    text = _template(version, "ranking").format(history=_history_lines(history, 0, False), similar=sim, hint=hin,
                                                candidates=cands)
    iids = tuple(int(x.iid) for x in (*history, *similar, *hint, *candidates))
    return Prompt(text, "ranking", version, iids)


def rating_prompt(history: Sequence[ItemView], item: ItemView, *, scale: tuple[float, float] = (1, 5),
                  version: str = "v1") -> Prompt:
    """Llama4Rec's rating prediction: the user's items with their ratings, then the item to rate
    on the rating ``scale`` (low, high)."""
    text = _template(version, "rating").format(history=_history_lines(history, 0), title=item.title,
                                               low=f"{scale[0]:g}", high=f"{scale[1]:g}")
    return Prompt(text, "rating", version, tuple(int(h.iid) for h in history) + (int(item.iid),))


def rating_target(rating: float) -> str:
    """The answer of a rating example (" 4"); its inverse is
    :func:`bridgerec.methods.llama4rec_core.parse_rating`."""
    return f" {rating:g}"


def ranking_target(order: Sequence[int]) -> str:
    """Listwise answer: the 1-based candidate numbers in order after one space (" 3, 1, 2"); the
    inverse is :func:`bridgerec.methods.llama4rec_core.parse_ranking`."""
    return " " + ", ".join(str(int(k)) for k in order)


def pair_preference_prompt(history: Sequence[ItemView], item_a: ItemView, item_b: ItemView, *,
                           version: str = "v1", max_text_chars: int = 80) -> Prompt:
    """Llama4Rec data augmentation: which of two items the user prefers (answer A or B)."""
    text = _template(version, "pair").format(history=_history_lines(history, max_text_chars), title_a=item_a.title,
                                             title_b=item_b.title)
    return Prompt(text, "pair", version, tuple(int(h.iid) for h in history) + (int(item_a.iid), int(item_b.iid)))


def attribute_prompt(item: ItemView, column: str, known: Mapping[str, Any], *, version: str = "v1") -> Prompt:
    """Llama4Rec attribute filling: generate a missing ``column`` from the item's known fields."""
    known_lines = "".join(f"{k.capitalize()}: {_clip(v, 200)}\n" for k, v in known.items() if str(v).strip())
    text = _template(version, "attribute").format(column=column, title=item.title, known=known_lines,
                                                  column_title=column.capitalize())
    return Prompt(text, "attribute", version, (int(item.iid),))


def bdlm_prompt(uid: int, history: Sequence[ItemView], *, version: str = "v1", ids: str = "tokens") -> Prompt:
    """BDLM: the user and the items as entity tokens (followed by the title for grounding);
    ``ids="text"`` names them in plain text instead ("user 12", "item 34": the ablation without
    entity tokens)."""
    if ids not in ("tokens", "text"):
        raise ValueError(f"ids must be 'tokens' or 'text', got {ids!r}")
    user, item = (user_token, item_token) if ids == "tokens" else (lambda k: f"user {int(k)}", lambda k: f"item {int(k)}")
    lines = "\n".join(f"- {item(h.iid)} {_quoted(h)}" for h in history) or "- (none)"
    text = _template(version, "bdlm").format(user=user(uid), history=lines)
    return Prompt(text, "bdlm", version, tuple(int(h.iid) for h in history))


def bdlm_target(item: ItemView) -> str:
    """BDLM target: the next item's entity token."""
    return f" {item_token(item.iid)}"


def bdlm_title_target(item: ItemView) -> str:
    """BDLM target of the title task (``method.bdlm.llm_task: title``): the next item's quoted title."""
    return f" {_quoted(item)}"


# ----------------------------------------------------------------------------- tokenisation


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a prompt exactly as the engines encode it (tokenizer special tokens included)."""
    return list(tokenizer(text, add_special_tokens=True)["input_ids"])


def encode_example(tokenizer: Any, prompt: str, target: str, *, add_eos: bool = True,
                   max_length: Optional[int] = None, chat: ChatFormat = PLAIN) -> dict[str, list[int]]:
    """A supervised example: ``input_ids = prompt ids + target ids (+ eos)``, ``labels`` -100 on the prompt.

    The prompt ids equal :func:`encode_prompt` of :func:`engine_text` (what vLLM and the
    transformers engine see for the same prompt and ``chat``); the target is encoded on its own
    without special tokens (:meth:`ChatFormat.target`). ``max_length`` truncates from the left of
    the prompt so the target always survives.
    """
    p_ids = encode_prompt(tokenizer, engine_text(prompt, chat))
    t_ids = list(tokenizer(chat.target(target), add_special_tokens=False)["input_ids"])
    if add_eos and tokenizer.eos_token_id is not None:
        t_ids.append(int(tokenizer.eos_token_id))
    if max_length is not None and len(p_ids) + len(t_ids) > max_length:
        keep = max(0, max_length - len(t_ids))
        p_ids = p_ids[len(p_ids) - keep:] if keep else []
    input_ids = p_ids + t_ids
    return {
        "input_ids": input_ids,
        "attention_mask": [1] * len(input_ids),
        "labels": [-100] * len(p_ids) + t_ids,
    }


CORPUS_EXCLUDED = ("rating",)
"""Templates left out of :func:`template_corpus`: every word of theirs is already in it (a test
checks), and adding them would change the tiny tokenizer and backbone every pinned figure was
measured on."""


def template_corpus(version: Optional[str] = None) -> list[str]:
    """The fixed words of every template (part of the tiny tokenizer's training text)."""
    versions = [version] if version else list(PROMPT_VERSIONS)
    out = []
    for v in versions:
        for kind, tpl in _TEMPLATES[v].items():
            if kind not in CORPUS_EXCLUDED:
                out.append(tpl.replace("{", " ").replace("}", " "))
    out.append(" ".join(PAIR_CHOICES) + " 0 1 2 3 4 5 6 7 8 9 , rating")
    return out
