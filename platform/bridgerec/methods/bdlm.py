"""BDLM (Wang et al., "Bridging the Domain Gap between LLMs and Recommenders by Deep Mutual Learning";
arXiv 2311.03778): an LLM with a token per user and item, and a domain model, trained together in
ONE module (so one DDP / DeepSpeed ZeRO 0-3 engine holds both).

Parts of the module (every parameter is used inside :meth:`BDLM.forward`, so ZeRO-3 gathers it):

``llm``
    the backbone with LoRA (``llm.lora.*``); its own weights stay frozen.
``entity``
    the rows of the ``<u_k>`` / ``<i_k>`` tokens, (U + I, d_model), trainable. They extend the
    vocabulary: the tokenizer carries the tokens (ids ``base_vocab + k`` for users, ``base_vocab +
    U + i`` for items), and a token id past the base vocabulary is embedded from this table. They
    are preloaded from a pre-trained domain model's embeddings through
    :func:`bridgerec.llm.entity.entity_rows` (``llm.entity_tokens.init``: ``learned``/``fixed``
    project them, ``random`` ignores them; the projection only initialises the rows, which then
    train freely, so ``learned`` and ``fixed`` start alike here).
``domain``
    the domain model (MF, LightGCN, ...), optionally started from the same pre-trained run.
``share``
    the information-sharing module (:class:`SharingModule`): ``down`` carries entity rows and
    ``feature`` the prompt feature from d_model into the domain model's space; ``down`` starts as
    the inverse of the preload projection and ``feature`` at zero, so before the first step the
    two sides agree and BDLM scores exactly as the pre-trained domain model does.

Losses (named; ``method.loss_weights`` weighs each, ``method.bdlm.gamma`` the mutual ones):

``rec``
    the domain model's own loss (BPR + its regulariser) on its embeddings ``e``.
``rec_llm`` (``method.bdlm.llm_feature``)
    BPR on the enriched score ``<[e_u ; feature(f_u)], [e_i ; down(r_i)]>`` = ``e_u.e_i +
    feature(f_u).down(r_i)``: the domain model's embeddings concatenated with the projected LLM
    feature ``f_u`` of the user's prompt (the last token's last hidden state) and the projected
    item-token row ``r_i``. ``f`` is recomputed for all users once per epoch (:meth:`begin_epoch`,
    batched, no grad, split over the ranks) and cached in the ``user_feature`` buffer, so a
    training step does not run the LLM for it. Recommendation (evaluation and the exported
    vectors) uses the same enriched score.
``llm``
    next-item prediction: the prompt (the user token and the last ``history_len`` training items
    as ``<i_k> "title"`` lines) runs through the LoRA LLM; the last hidden state ``h`` scores the
    item-token rows only, ``softmax(h . r_i)`` over the I items (the tied output embedding of the
    new vocabulary rows), cross-entropy against the event's item.
``mutual_llm``, ``mutual_domain``
    deep mutual learning between the two sides' views of the batch's entities (its users and
    its positive and negative items). With ``z = normalize(down(r))`` the projected entity rows
    and ``e' = normalize(e)`` the domain embeddings::

        mutual_llm    = γ · mean ||z − sg(e')||²     (gradient reaches the entity rows and down)
        mutual_domain = γ · mean ||e' − sg(z)||²     (gradient reaches the domain model only)

    ``sg`` is stop-gradient: each side is pulled toward the other's current view, never both
    through one loss. The paper states the losses at the embedding level without fixing the
    distance; the cosine form (squared distance of unit vectors, 2 − 2 cos) is used because it is
    blind to the two spaces' scales (domain embeddings have norms near ``init_std · sqrt(d)``,
    LLM rows near the token-embedding scale). Alternatives considered: plain MSE (scale-sensitive:
    it shrinks whichever side is larger) and the classic DML form, KL between the two models'
    item distributions for a user (it needs the LLM's item softmax for every domain step, which
    the cached-feature design avoids); neither was measured here.

Cost: a step runs the LLM on ``method.bdlm.llm_samples`` prompts of the batch (all by default);
an epoch adds one no-grad LLM pass over every user's prompt for the feature cache.

``llm`` with ``method.bdlm.llm_task: title`` instead: the prompt followed by the event's item
title (``"title"`` then end-of-sequence, at most ``title_max_tokens``), causal-LM cross-entropy on
the title tokens through the LLM's own output head; the item rows then learn from the mutual and
``rec_llm`` losses only.

Ablations by config (the issue's four first):

- ``method.bdlm.entity_ids=text``: no entity tokens. Prompts name users and items in plain text
  ("user 12", "item 34"), the tokenizer gains nothing and the LLM's input never reads an entity
  row. The item rows stay the output head of the ``item`` task and the LLM side of the items'
  mutual losses; the user rows are unused (``mutual_llm``/``mutual_domain`` over items only).
- ``llm.entity_tokens.init=random``: random rows, no preload.
- ``method.bdlm.schedule=sequential``: the LLM, then the domain model, not jointly. The first
  ``method.bdlm.llm_epochs`` epochs train the LLM side (``llm``, ``mutual_llm`` toward the fixed
  pre-trained domain model). The remaining epochs train the domain side (``rec``, ``rec_llm``,
  ``mutual_domain``, with the entity rows detached) on the tuned LLM's features. The other
  side's losses are multiplied by 0, not dropped, so DDP and ZeRO see every parameter used. In
  the domain phase the LLM runs on one prompt per step, and the LLM side's optimizer state
  carries over: Adam's momentum moves it for a few more steps before it stops (no new gradient
  reaches it).
- ``method.bdlm.llm_feature=false``: no LLM feature in the domain model.
- Besides those four: ``method.bdlm.domain_run`` unset (nothing pre-trained) and
  ``method.bdlm.gamma=0`` (no mutual learning).

The training stream carries the tokenised prompts: :func:`stream_stage` runs in Ray Data
(``map_batches``), builds each event's prompt with :func:`bridgerec.llm.prompts.bdlm_prompt` from
the user's training items before it, and tokenises it there (left-padded to
``method.bdlm.max_length``): columns ``prompt_ids`` (B, L) and ``prompt_len`` (B,).
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bridgerec.methods.base import Method
from bridgerec.models.base import Batch, DomainModel, bpr_loss

__all__ = ["BDLM", "BDLMContext", "bdlm_context", "stream_stage", "prompt_tokens", "title_tokens"]


@dataclass
class BDLMContext:
    """What BDLM needs besides the domain model (the ``bdlm`` method input, loaded per worker)."""

    backbone: str
    """Hugging Face directory of the base LLM."""
    llm: Any
    """The ``llm`` config section (:class:`bridgerec.llm.config.LLMConfig`): LoRA, entity tokens, dtype."""
    base_vocab: int
    """Vocabulary size before the entity tokens (the first user token's id)."""
    pad_id: int
    user_prompts: np.ndarray
    """(U, L) int64: each user's prompt over its last training items, left-padded."""
    user_prompt_len: np.ndarray
    """(U,) int64: real tokens of each row of ``user_prompts``."""
    user_emb: Optional[np.ndarray] = None
    """(U, d) pre-trained domain embeddings (``method.bdlm.domain_run``), or None."""
    item_emb: Optional[np.ndarray] = None
    """(I, d) pre-trained domain embeddings, or None."""


# ------------------------------------------------------------------------- prompts and tokens


@functools.lru_cache(maxsize=4)
def _tokenizer(backbone: str, n_users: int, n_items: int, entity_tokens: bool = True):
    """The backbone's tokenizer with the entity tokens (none when prompts name ids in text); one
    per process: Data workers reuse it."""
    from bridgerec.llm.backbone import load_tokenizer
    from bridgerec.llm.entity import add_entity_token_names

    tok = load_tokenizer(backbone)
    base = len(tok)
    if entity_tokens:
        add_entity_token_names(tok, n_users, n_items)
    return tok, base


@functools.lru_cache(maxsize=4)
def _titles(dataset_dir: str) -> np.ndarray:
    from bridgerec.data.dataset import DatasetDir

    return DatasetDir(dataset_dir).items()["title"].astype(str).to_numpy()


@functools.lru_cache(maxsize=4)
def _train_histories(dataset_dir: str):
    from bridgerec.data.dataset import DatasetDir
    from bridgerec.models.histories import histories_for

    return histories_for(DatasetDir(dataset_dir), ("train",))


def prompt_tokens(tokenizer: Any, chat: Any, uid: int, history: np.ndarray, titles: np.ndarray,
                  history_len: int, max_length: int, version: str = "v1", ids: str = "tokens") -> list[int]:
    """Token ids of the BDLM prompt of ``uid`` over ``history`` (item ids, oldest first): the last
    ``history_len`` items, the oldest dropped until the prompt fits ``max_length`` (then cut from
    the left: the end of the prompt, where the prediction is read, always survives). ``ids``:
    entity ``tokens`` or plain ``text``."""
    from bridgerec.llm.prompts import ItemView, bdlm_prompt, encode_prompt, engine_text

    items = [int(i) for i in history[-history_len:]]
    while True:
        prompt = bdlm_prompt(uid, [ItemView(i, titles[i]) for i in items], version=version, ids=ids)
        tokens = encode_prompt(tokenizer, engine_text(prompt, chat))
        if len(tokens) <= max_length or not items:
            return tokens[-max_length:]
        items = items[1:]


def title_tokens(tokenizer: Any, chat: Any, iid: int, titles: np.ndarray, max_tokens: int) -> list[int]:
    """Token ids of the title target of item ``iid`` (``llm_task: title``) as it follows the
    prompt: at most ``max_tokens - 1`` title tokens, then end-of-sequence."""
    from bridgerec.llm.prompts import ItemView, bdlm_title_target

    text = chat.target(bdlm_title_target(ItemView(iid, titles[iid])))
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])[: max_tokens - 1] + [tokenizer.eos_token_id]


def _left_pad(rows: list[list[int]], length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    out = np.full((len(rows), length), pad_id, dtype=np.int64)
    lens = np.zeros(len(rows), dtype=np.int64)
    for r, ids in enumerate(rows):
        if ids:
            out[r, length - len(ids):] = ids
        lens[r] = len(ids)
    return out, lens


class _PromptStage:
    """Ray Data ``map_batches`` function: (``uid``, ``iid``, ``pos_idx``) -> ``prompt_ids``,
    ``prompt_len`` (and, for ``llm_task: title``, the event's title appended to its prompt and
    ``target_len``, its token count).

    Picklable (settings only); the tokenizer, titles and histories load once per Data worker."""

    def __init__(self, dataset_dir: str, backbone: str, chat: dict, n_users: int, n_items: int, history_len: int,
                 max_length: int, version: str, ids: str = "tokens", title_max_tokens: Optional[int] = None):
        self.dataset_dir, self.backbone, self.chat = dataset_dir, backbone, chat
        self.n_users, self.n_items = n_users, n_items
        self.history_len, self.max_length, self.version = history_len, max_length, version
        self.ids, self.title_max_tokens = ids, title_max_tokens

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from bridgerec.llm.prompts import ChatFormat

        tok, _ = _tokenizer(self.backbone, self.n_users, self.n_items, self.ids == "tokens")
        chat = ChatFormat(**self.chat)
        titles = _titles(self.dataset_dir)
        indptr, items = _train_histories(self.dataset_dir)
        rows, targets = [], []
        for u, i, k in zip(batch["uid"].tolist(), batch["iid"].tolist(), batch["pos_idx"].tolist()):
            start = indptr[u]
            rows.append(prompt_tokens(tok, chat, u, items[start:start + k], titles, self.history_len,
                                      self.max_length, self.version, self.ids))
            if self.title_max_tokens:
                targets.append(title_tokens(tok, chat, i, titles, self.title_max_tokens))
        extra = self.title_max_tokens or 0  # the title after the prompt (llm_task: title), else nothing
        ids, lens = _left_pad([p + t for p, t in zip(rows, targets)] if extra else rows, self.max_length + extra,
                              tok.pad_token_id)
        out = {**batch, "prompt_ids": ids, "prompt_len": lens}
        if extra:
            out["target_len"] = np.array([len(t) for t in targets], dtype=np.int64)
        return out


def _chat(cfg, backbone) -> Any:
    from bridgerec.llm.backbone import chat_format, load_tokenizer

    return chat_format(cfg.llm, backbone, load_tokenizer(backbone.path))


def stream_stage(cfg, data) -> _PromptStage:
    """The Ray Data stage that adds the tokenised prompt of every training event (see the module docstring)."""
    from bridgerec.llm.backbone import resolve_backbone

    backbone = resolve_backbone(cfg.llm, cfg.work_dir, data)
    b = cfg.method.bdlm
    return _PromptStage(data.path, backbone.path, _chat(cfg, backbone).to_dict(), data.n_users, data.n_items,
                        b.history_len, b.max_length, cfg.llm.prompt_version, b.entity_ids,
                        b.title_max_tokens if b.llm_task == "title" else None)


def bdlm_context(cfg, data) -> BDLMContext:
    """The ``bdlm`` method input: the backbone, every user's prompt tokens and the pre-trained
    domain embeddings (``method.bdlm.domain_run``, checked against the dataset's counts)."""
    from bridgerec.llm.backbone import resolve_backbone
    from bridgerec.models.pretrained import load_domain_embeddings

    b = cfg.method.bdlm
    backbone = resolve_backbone(cfg.llm, cfg.work_dir, data)
    tok, base = _tokenizer(backbone.path, data.n_users, data.n_items, b.entity_ids == "tokens")
    chat = _chat(cfg, backbone)
    titles = _titles(data.path)
    indptr, items = _train_histories(data.path)
    rows = [prompt_tokens(tok, chat, u, items[indptr[u]:indptr[u + 1]], titles, b.history_len, b.max_length,
                          cfg.llm.prompt_version, b.entity_ids) for u in range(data.n_users)]
    ids, lens = _left_pad(rows, b.max_length, tok.pad_token_id)
    users = items_emb = None
    if b.domain_run:
        users, items_emb = load_domain_embeddings(b.domain_run, cfg.tracking_uri(), key="method.bdlm.domain_run")
        if users.shape[0] != data.n_users or items_emb.shape[0] != data.n_items:
            raise ValueError(f"method.bdlm.domain_run: {b.domain_run} has {users.shape[0]} users / {items_emb.shape[0]} "
                             f"items; this dataset has {data.n_users} / {data.n_items} (a run on another dataset?)")
    return BDLMContext(backbone.path, cfg.llm, base, int(tok.pad_token_id), ids, lens, users, items_emb)


# ----------------------------------------------------------------------------------- modules


class SharingModule(nn.Module):
    """The information-sharing projections between the LLM space (d_model) and the domain space (d_domain).

    ``down``: LLM vectors -> domain space, applied to entity rows (the mutual losses, the item side
    of the enriched score). It starts as the pseudo-inverse of the preload projection ``W``
    (``rows = E W^T``), so ``down(row) = e`` before the first step: the two sides agree and the
    mutual losses start at zero (seeded random when nothing was projected, ``init: random``).
    ``feature``: the LLM feature of a user's prompt -> domain space; it starts at zero, so the
    enriched score starts as the domain model's own score and the LLM term grows only as it helps.
    """

    def __init__(self, d_model: int, d_domain: int, preload: Optional[torch.Tensor] = None, seed: int = 0):
        super().__init__()
        self.down = nn.Linear(d_model, d_domain, bias=False)
        self.feature = nn.Linear(d_model, d_domain, bias=False)
        with torch.no_grad():
            if preload is not None:  # (d_model, d_domain) -> its pseudo-inverse (d_domain, d_model)
                self.down.weight.copy_(torch.linalg.pinv(preload.float()))
            else:  # the same on every rank, whatever the global RNG did
                gen = torch.Generator().manual_seed(seed)
                self.down.weight.copy_(torch.randn(d_domain, d_model, generator=gen) / d_model ** 0.5)
            self.feature.weight.zero_()


def _register_external(module: nn.Module, params) -> None:
    """Tell ZeRO-3 to gather ``params`` (owned by a submodule) for ``module``'s whole forward and
    backward (the domain model's tables are read through its own methods, not its forward)."""
    try:
        from deepspeed.zero import register_external_parameter
    except ImportError:  # no DeepSpeed: nothing partitions the parameters
        return
    for p in params:
        register_external_parameter(module, p)


class BDLM(Method):
    """``bdlm``; see the module docstring."""

    name = "bdlm"
    required_augmentations = ("bdlm",)
    stream_needs = ("pos_idx",)

    @classmethod
    def stream_stage(cls, cfg, data) -> "_PromptStage":
        return stream_stage(cfg, data)

    def __init__(self, cfg, domain: DomainModel, inputs: dict[str, Any]):
        super().__init__(cfg, domain, inputs)
        ctx: BDLMContext = inputs["bdlm"]
        b = cfg.bdlm
        self.gamma, self.with_feature, self.llm_lr = b.gamma, b.llm_feature, b.llm_lr
        self.feature_batch_size, self.llm_samples = b.feature_batch_size, b.llm_samples
        self.llm_task, self.ids_as_text = b.llm_task, b.entity_ids == "text"
        self.schedule, self.llm_epochs = b.schedule, b.llm_epochs
        self.phase = "joint" if b.schedule == "joint" else "llm"  # set per epoch by begin_epoch
        self.base_vocab, self.pad_id = ctx.base_vocab, ctx.pad_id
        self.n_users, self.n_items = domain.n_users, domain.n_items
        self.llm = _lora_llm(ctx)
        d_model = self.llm.get_input_embeddings().weight.shape[1]
        self.entity = nn.Embedding(self.n_users + self.n_items, d_model)
        proj = self._preload(ctx, b.domain_init)
        self.share = SharingModule(d_model, domain.dim, None if proj is None else proj.weight.detach(),
                                   ctx.llm.entity_tokens.seed)
        if not self.with_feature:  # unused parts must not train (DDP waits for every trainable gradient)
            self.share.feature.requires_grad_(False)
            if self.gamma == 0:
                self.share.down.requires_grad_(False)
        self.register_buffer("user_prompts", torch.from_numpy(np.asarray(ctx.user_prompts, np.int64)), persistent=False)
        self.register_buffer("user_prompt_len", torch.from_numpy(np.asarray(ctx.user_prompt_len, np.int64)),
                             persistent=False)
        self.register_buffer("user_feature", torch.zeros(self.n_users, d_model))  # (U, d_model), refreshed per epoch
        _register_external(self, domain.parameters())

    @property
    def _ddp_params_and_buffers_to_ignore(self) -> list[str]:
        """The submodules' exclusions plus this module's constants, identical on every rank (the
        feature cache is all-gathered): DDP must not broadcast them before each forward."""
        return [*Method._ddp_params_and_buffers_to_ignore.fget(self), "user_prompts", "user_prompt_len", "user_feature"]

    @torch.no_grad()
    def _preload(self, ctx: BDLMContext, domain_init: str):
        """Write the entity rows; returns the preload projection (None under ``init: random``)."""
        from bridgerec.llm.entity import entity_rows

        users, items = ctx.user_emb, ctx.item_emb
        if users is None:  # nothing pre-trained: the domain model's own init is what is preloaded
            warnings.warn("method.bdlm.domain_run is not set: entity tokens are preloaded from an untrained domain model",
                          stacklevel=3)
            users, items = self.domain.export_embeddings()
        elif domain_init == "run":
            self.domain.init_from_embeddings(torch.as_tensor(users), torch.as_tensor(items))
        base = self.llm.get_input_embeddings().weight[: self.base_vocab]
        rows_u, rows_i, proj = entity_rows(base, users, items, ctx.llm.entity_tokens)
        self.entity.weight.copy_(torch.cat([rows_u, rows_i]).to(self.entity.weight.dtype))
        return proj

    # -- the LLM side ----------------------------------------------------------------------------

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L, d_model) input embeddings: base vocabulary from the (frozen) LLM table, entity
        tokens from ``entity``; both are module calls, so ZeRO-3 gathers them."""
        is_entity = ids >= self.base_vocab
        base = self.llm.get_input_embeddings()(ids.clamp(max=self.base_vocab - 1))
        ent = self.entity((ids - self.base_vocab).clamp(min=0))
        return torch.where(is_entity.unsqueeze(-1), ent, base)

    def _hidden(self, ids: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        """(B, L, d_model) last layer's hidden states of left-padded sequences (``lens`` real tokens each)."""
        L = ids.shape[1]
        mask = torch.arange(L, device=ids.device).unsqueeze(0) >= (L - lens).unsqueeze(1)  # (B, L)
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        body = self.llm.get_base_model().model  # the decoder stack without the LM head
        return body(inputs_embeds=self._embed(ids), attention_mask=mask.long(), position_ids=positions).last_hidden_state

    def _last_hidden(self, ids: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        """(B, d_model) last layer's hidden state at the last prompt token (prompts are left-padded)."""
        return self._hidden(ids, lens)[:, -1]

    def _title_loss(self, ids: torch.Tensor, lens: torch.Tensor, target_len: torch.Tensor) -> torch.Tensor:
        """Causal-LM cross-entropy on the last ``target_len`` tokens of each row (the title after
        the prompt), through the LLM's own (frozen) output head."""
        T = int(target_len.max())
        h = self._hidden(ids, lens)[:, -T - 1:-1]  # (B, T, d): the states that predict the last T tokens
        logits = self.llm.get_output_embeddings()(h).float()  # (B, T, V)
        keep = torch.arange(T, device=ids.device).unsqueeze(0) >= (T - target_len).unsqueeze(1)
        return F.cross_entropy(logits[keep], ids[:, -T:][keep])

    def _item_rows(self) -> torch.Tensor:
        """(I, d_model) item-token rows."""
        return self.entity(torch.arange(self.n_users, self.n_users + self.n_items, device=self.user_feature.device))

    @torch.no_grad()
    def begin_epoch(self, epoch: int, gather=None) -> None:
        """Set the epoch's phase (``schedule: sequential``: ``llm`` for the first ``llm_epochs``,
        then ``domain``), then recompute ``user_feature`` for every user (not needed in the LLM
        phase): each rank a slice, then ``gather`` (every rank's slice in rank order; None = one
        process). Every rank calls this with the same number of LLM forwards, so ZeRO-3's parameter
        gathers line up."""
        if self.schedule == "sequential":
            self.phase = "llm" if epoch < self.llm_epochs else "domain"
        if not self.with_feature or self.phase == "llm":
            return
        import torch.distributed as dist

        dist_on = gather is not None and dist.is_available() and dist.is_initialized()
        rank, world = (dist.get_rank(), dist.get_world_size()) if dist_on else (0, 1)
        device = self.user_feature.device
        per_rank = -(-self.n_users // world)
        mine = torch.arange(rank, per_rank * world, world, device=device) % self.n_users  # padded with repeats
        was_training = self.llm.training
        self.llm.eval()
        parts = [self._last_hidden(self.user_prompts[u], self.user_prompt_len[u]).float()
                 for u in mine.split(self.feature_batch_size)]
        self.llm.train(was_training)
        local = torch.cat(parts)  # (per_rank, d_model)
        if world > 1:
            full = torch.stack(gather(local), dim=1).reshape(per_rank * world, -1)  # interleave back to user order
        else:
            full = local
        self.user_feature.copy_(full[: self.n_users].to(self.user_feature.dtype))

    # -- training --------------------------------------------------------------------------------

    def _llm_columns(self) -> tuple[str, ...]:
        return ("prompt_ids", "prompt_len", *(("target_len",) if self.llm_task == "title" else ()))

    def batch_inputs(self, stream: dict[str, torch.Tensor]) -> Batch:
        return {**self.domain.batch_inputs(stream), **{c: stream[c] for c in self._llm_columns()}}

    @property
    def stream_columns(self) -> tuple[str, ...]:
        return (*self.domain.stream_columns, *self._llm_columns())

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        losses = {"rec": self.domain(batch)}
        users, items = self.domain.user_embeddings(), self.domain.item_embeddings()  # (U, d), (I, d)
        item_rows = self._item_rows()  # (I, d_model)
        uid, pos, neg = batch["uid"], batch["pos"], batch["neg"]
        if self.with_feature:
            a = self.share.feature(self.user_feature[uid])  # (B, d)
            b_items = self.share.down(item_rows if self.phase == "joint" else item_rows.detach())  # (I, d)
            s_pos = (users[uid] * items[pos]).sum(-1) + (a * b_items[pos]).sum(-1)
            s_neg = torch.einsum("bd,bnd->bn", users[uid], items[neg]) + torch.einsum("bd,bnd->bn", a, b_items[neg])
            losses["rec_llm"] = bpr_loss(s_pos, s_neg)
        # the first k events of the (shuffled) batch run through the LLM; one in the domain phase (weight 0)
        k = 1 if self.phase == "domain" else (self.llm_samples or len(pos))
        if self.llm_task == "title":
            losses["llm"] = self._title_loss(batch["prompt_ids"][:k], batch["prompt_len"][:k], batch["target_len"][:k])
        else:
            h = self._last_hidden(batch["prompt_ids"][:k], batch["prompt_len"][:k])  # (k, d_model)
            losses["llm"] = F.cross_entropy(h @ item_rows.T, pos[:k])
        if self.gamma > 0:
            losses.update(self._mutual(users, items, uid, torch.unique(torch.cat([pos, neg.reshape(-1)]))))
        return self._phase_weights(losses)

    def _phase_weights(self, losses: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Zero the losses of the side that does not train in this phase (``schedule:
        sequential``); they stay in the graph, so every engine sees every parameter used."""
        off = {"llm": ("rec", "rec_llm", "mutual_domain"), "domain": ("llm", "mutual_llm")}.get(self.phase, ())
        return {name: loss * 0.0 if name in off else loss for name, loss in losses.items()}

    def _mutual(self, users: torch.Tensor, items: torch.Tensor, uid: torch.Tensor, iids: torch.Tensor
                ) -> dict[str, torch.Tensor]:
        u = uid[:0] if self.ids_as_text else torch.unique(uid)  # ids as text: the user rows are not the LLM's
        z = F.normalize(self.share.down(self.entity(torch.cat([u, iids + self.n_users]))), dim=-1)  # LLM side
        e = F.normalize(torch.cat([users[u], items[iids]]), dim=-1)  # domain side
        return {"mutual_llm": self.gamma * (z - e.detach()).pow(2).sum(-1).mean(),
                "mutual_domain": self.gamma * (e - z.detach()).pow(2).sum(-1).mean()}

    def param_groups(self, lr: float) -> list[dict]:
        """Two groups: the LLM side (LoRA, entity rows) at ``method.bdlm.llm_lr``, the rest at ``lr``."""
        llm_side = [p for p in [*self.llm.parameters(), *self.entity.parameters()] if p.requires_grad]
        ids = {id(p) for p in llm_side}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in ids]
        return [{"params": llm_side, "lr": self.llm_lr or lr}, {"params": rest, "lr": lr}]

    # -- recommendation --------------------------------------------------------------------------

    def _enriched(self) -> tuple[torch.Tensor, torch.Tensor]:
        users, items = self.domain.user_embeddings(), self.domain.item_embeddings()
        if not self.with_feature:
            return users, items
        return (torch.cat([users, self.share.feature(self.user_feature)], dim=1),
                torch.cat([items, self.share.down(self._item_rows())], dim=1))

    def user_embeddings(self) -> torch.Tensor:
        return self._enriched()[0]

    def item_embeddings(self) -> torch.Tensor:
        return self._enriched()[1]

    def full_scores(self, uids: torch.Tensor) -> torch.Tensor:
        users, items = self._enriched()
        return users[uids] @ items.T


def _lora_llm(ctx: BDLMContext):
    """The base LLM with LoRA (``llm.lora``); every base weight frozen."""
    from bridgerec.llm.backbone import load_causal_lm
    from bridgerec.llm.lora import apply_lora

    model = load_causal_lm(ctx.backbone, ctx.llm.backbone_dtype)
    model.config.use_cache = False
    return apply_lora(model, ctx.llm.lora).train()
