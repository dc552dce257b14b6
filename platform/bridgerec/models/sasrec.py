"""SASRec (Kang & McAuley, 2018, "Self-Attentive Sequential Recommendation", ICDM; arXiv 1808.09781).

A user is the sequence of their most recent ``L = cfg.max_seq_len`` training items, as tokens
``iid + 1`` left-padded with 0. With the item table ``M`` ((I+1, d), row 0 = padding, kept at
zero) and learned positions ``P`` ((L, d))::

    H^(0)   = dropout(sqrt(d) * M[s_t] + P_t)                      (B, L, d)
    H^(b+1) = H' + FFN(LN(H')),  H' = H^(b) + MHA(LN(H^(b)))       b = 0..cfg.n_layers-1
    h_u     = LN(H^(n_layers))[:, -1]                              the last position, (B, d)
    r(u, i) = <h_u, M[i + 1]>

Attention is causal, and a real position never attends to padding (each position may always
attend to itself, so an all-padding row is well defined). Training rows carry ``seq`` — the
items before the positive — and the loss is either full-softmax cross-entropy
``-log softmax_i r(u, i)[pos]`` (``cfg.seq_loss = "ce"``) or BPR against ``neg`` (``"bpr"``),
plus ``cfg.l2 * |M[target rows]|² / B`` on the item rows scored as targets.

``user_embeddings()`` encodes each user's stored history without dropout (so it is
deterministic in both modes), in batches; in eval mode the result is cached until ``train()``
is called, a parameter changes or :meth:`SASRec.set_histories` replaces the histories. The
stored history is the training items the model was built with; at test time the caller
replaces it with train + validation events, and for serving with every known event (see
:func:`bridgerec.models.histories.histories_for` and ``conditioned_on``). ``item_embeddings()`` is ``M[1:]``. The tables are direct
parameters of the module so that DeepSpeed ZeRO-3 gathers them in this module's forward.
``embed_histories(lists)`` encodes item lists the model has not stored (a user unknown to the
model, as serving sees one) the same way: the last ``L`` items of each list, no dropout.

``histories_from_frame`` and ``build_sequences`` turn interaction rows into the CSR of
histories and the left-padded input sequences the training loop feeds as ``seq``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bridgerec._csr import from_lists, row_offsets
from bridgerec.models.config import ModelConfig
from bridgerec.models.base import Batch, DomainModel, bpr_loss

__all__ = ["SASRec", "build_sequences", "histories_from_frame"]

_USER_BATCH = 1024
"""Users encoded per pass when computing ``user_embeddings()``."""


# -- sequences ---------------------------------------------------------------------------------


def histories_from_frame(uids, iids, ts, n_users: int, tiebreak=None, seq=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort interaction rows by (uid, ts, iid) into per-user histories.

    ``tiebreak`` (optional, one int per row) is a key between ``ts`` and ``iid``: rows are then
    ordered by (uid, ts, tiebreak, iid) — e.g. the split a row comes from, so that a validation
    event sorts after a training event with the same timestamp. ``seq`` (optional, the dataset's
    input-order column: file, then row) comes after ``tiebreak`` and before ``iid``, so
    same-second events keep the order of the input files (the order the splits were cut by).

    Returns ``indptr`` (U+1,), ``items`` (nnz,) — user ``u``'s history is
    ``items[indptr[u]:indptr[u+1]]`` in time order — and ``positions`` (nnz,): for each input
    row, its index within its user's history. All int64.
    """
    uids, iids = np.asarray(uids, dtype=np.int64), np.asarray(iids, dtype=np.int64)
    ts = np.asarray(ts)
    if not len(uids) == len(iids) == len(ts):
        raise ValueError(f"uids, iids, ts differ in length: {len(uids)}, {len(iids)}, {len(ts)}")
    if len(uids) and (uids.min() < 0 or uids.max() >= n_users):
        raise ValueError(f"user ids outside 0..{n_users - 1}")
    keys = [iids]  # np.lexsort: the last key is primary
    for name, key in (("seq", seq), ("tiebreak", tiebreak)):
        if key is not None:
            key = np.asarray(key, dtype=np.int64)
            if len(key) != len(uids):
                raise ValueError(f"{name} has {len(key)} rows, expected {len(uids)}")
            keys.append(key)
    order = np.lexsort((*keys, ts, uids))
    indptr = row_offsets(uids, n_users)
    sorted_uids = uids[order]
    positions = np.empty(len(uids), dtype=np.int64)
    positions[order] = np.arange(len(uids), dtype=np.int64) - indptr[sorted_uids]
    return indptr, iids[order], positions


def build_sequences(histories, uids, positions, max_len: int) -> torch.Tensor:
    """(B, max_len) int64: for row ``b``, the items before index ``positions[b]`` of user
    ``uids[b]``'s history (at most the last ``max_len``), as ``iid + 1``, left-padded with 0.
    ``positions[b]`` equal to the history length gives the whole history's tail."""
    indptr, items = (np.asarray(a, dtype=np.int64) for a in histories)
    uids, positions = np.asarray(uids, dtype=np.int64), np.asarray(positions, dtype=np.int64)
    if len(uids) and ((positions < 0).any() or (positions > indptr[uids + 1] - indptr[uids]).any()):
        raise ValueError("positions must lie within 0..len(history) of each user")
    start = indptr[uids]  # (B,)
    idx = (start + positions)[:, None] + np.arange(-max_len, 0)  # (B, L) history indices
    valid = idx >= start[:, None]  # (B, L)
    if not len(items):
        return torch.zeros(idx.shape, dtype=torch.int64)
    tokens = np.where(valid, items[np.clip(idx, 0, len(items) - 1)] + 1, 0)  # (B, L)
    return torch.from_numpy(tokens.astype(np.int64))


# -- encoder -----------------------------------------------------------------------------------


def _dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    return F.dropout(x, p) if p > 0 else x


class _Block(nn.Module):
    """Pre-LN causal self-attention block with a point-wise feed-forward network."""

    def __init__(self, dim: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.ln_attn, self.ln_ff = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.ff = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor, p: float) -> torch.Tensor:
        B, L, d = x.shape  # x (B, L, d); mask (B, 1, L, L), True = may attend
        q, k, v = self.qkv(self.ln_attn(x)).split(d, dim=-1)  # 3 x (B, L, d)
        q, k, v = (t.view(B, L, self.n_heads, d // self.n_heads).transpose(1, 2) for t in (q, k, v))  # (B, nh, L, hs)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # (B, nh, L, hs)
        x = x + _dropout(self.proj(a.transpose(1, 2).reshape(B, L, d)), p)  # (B, L, d)
        return x + _dropout(self.ff(self.ln_ff(x)), p)  # (B, L, d)


def _attention_mask(seq: torch.Tensor) -> torch.Tensor:
    """(B, 1, L, L) bool: query t attends key s iff s <= t and (s is an item or s == t)."""
    L = seq.shape[1]
    causal = torch.ones(L, L, dtype=torch.bool, device=seq.device).tril()  # (L, L)
    eye = torch.eye(L, dtype=torch.bool, device=seq.device)  # (L, L)
    keys = (seq != 0)[:, None, :] | eye  # (B, L, L)
    return (causal & keys).unsqueeze(1)  # (B, 1, L, L)


class SASRec(DomainModel):
    """SASRec over ``histories=(indptr, items)``; see the module docstring for the formulas."""

    stream_columns = ("pos_idx",)

    def __init__(self, cfg: ModelConfig, n_users: int, n_items: int, histories=None, **_: object):
        super().__init__()
        if histories is None:
            raise ValueError("the sasrec model needs histories=(indptr, items) of the training items")
        self.dim, self.n_users, self.n_items = cfg.dim, n_users, n_items
        self._indptr, self._items = self._checked(histories)  # numpy: never broadcast or checkpointed
        self.max_len, self.dropout_p, self.reg, self.seq_loss = cfg.max_seq_len, cfg.dropout, cfg.l2, cfg.seq_loss
        self.item_table = nn.Parameter(torch.randn(n_items + 1, cfg.dim) * cfg.init_std)  # (I+1, d) = M
        self.pos_table = nn.Parameter(torch.randn(cfg.max_seq_len, cfg.dim) * cfg.init_std)  # (L, d) = P
        with torch.no_grad():
            self.item_table[0].zero_()
        self.blocks = nn.ModuleList(_Block(cfg.dim, cfg.n_heads) for _ in range(cfg.n_layers))
        self.ln_out = nn.LayerNorm(cfg.dim)
        self._cache: tuple[tuple, torch.Tensor] | None = None

    # -- histories ---------------------------------------------------------------------------

    def _checked(self, histories) -> tuple[np.ndarray, np.ndarray]:
        indptr, items = (np.asarray(a, dtype=np.int64) for a in histories)
        if len(indptr) != self.n_users + 1 or indptr[-1] != len(items):
            raise ValueError(f"histories: indptr must have n_users + 1 = {self.n_users + 1} entries ending at len(items)")
        if len(items) and (items.min() < 0 or items.max() >= self.n_items):
            raise ValueError(f"histories: item ids must lie in 0..{self.n_items - 1}")
        return indptr, items

    @property
    def histories(self) -> tuple[np.ndarray, np.ndarray]:
        return self._indptr, self._items

    def set_histories(self, histories) -> None:
        self._indptr, self._items = self._checked(histories)
        self._cache = None  # the cached user states encode the old histories

    # -- encoder -----------------------------------------------------------------------------

    def encode(self, seq: torch.Tensor, stochastic: bool | None = None) -> torch.Tensor:
        """(B, L, d) hidden states of the left-padded token sequences ``seq`` (B, L); dropout
        applies when ``stochastic`` (default: in train mode)."""
        p = self.dropout_p if (self.training if stochastic is None else stochastic) else 0.0
        d = self.dim
        x = F.embedding(seq, self.item_table, padding_idx=0) * math.sqrt(d) + self.pos_table[-seq.shape[1] :]  # (B, L, d)
        x = _dropout(x, p)
        mask = _attention_mask(seq)  # (B, 1, L, L)
        for block in self.blocks:
            x = block(x, mask, p)  # (B, L, d)
        return self.ln_out(x)  # (B, L, d)

    def user_sequences(self, uids) -> torch.Tensor:
        """(B, L) the last ``max_seq_len`` items of each user's current history (the training
        items unless :meth:`set_histories` replaced them), as model input."""
        uids = np.asarray(uids.cpu() if torch.is_tensor(uids) else uids, dtype=np.int64)
        lengths = self._indptr[uids + 1] - self._indptr[uids]
        seq = build_sequences((self._indptr, self._items), uids, lengths, self.max_len)
        return seq.to(self.item_table.device)

    def _encode_users(self, uids) -> torch.Tensor:
        """(B, d) deterministic last-position states for ``uids``, in batches of users."""
        uids = np.asarray(uids.cpu() if torch.is_tensor(uids) else uids, dtype=np.int64)
        return self._encode_tails((self._indptr, self._items), uids)

    def _encode_tails(self, histories, rows: np.ndarray) -> torch.Tensor:
        """(B, d) deterministic last-position states of the whole histories of ``rows`` (each
        cut to its last ``max_seq_len`` items by :func:`build_sequences`), in batches."""
        indptr = histories[0]
        parts = []
        for s in range(0, len(rows), _USER_BATCH):
            r = rows[s : s + _USER_BATCH]
            seq = build_sequences(histories, r, indptr[r + 1] - indptr[r], self.max_len)  # (b, L)
            parts.append(self.encode(seq.to(self.item_table.device), stochastic=False)[:, -1])  # (b, d)
        return torch.cat(parts) if parts else self.item_table.new_zeros(0, self.dim)

    def embed_histories(self, histories) -> torch.Tensor:
        """(B, d): each time-ordered item list (oldest first) encoded as :meth:`user_embeddings`
        encodes a known user's stored history — its last ``max_seq_len`` items, no dropout."""
        indptr, items = from_lists(histories)
        if len(items) and (items.min() < 0 or items.max() >= self.n_items):
            raise ValueError(f"histories: item ids must lie in 0..{self.n_items - 1}")
        return self._encode_tails((indptr, items), np.arange(len(indptr) - 1, dtype=np.int64))

    def _param_key(self) -> tuple:
        return tuple((p._version, p.data_ptr(), p.device, p.dtype) for p in self.parameters())

    def train(self, mode: bool = True) -> "SASRec":
        self._cache = None
        return super().train(mode)

    # -- DomainModel -------------------------------------------------------------------------

    def batch_inputs(self, stream: dict[str, torch.Tensor]) -> Batch:
        """``seq`` (B, L): the items before each event in its user's current history (during
        training: the training items, as the stream's ``pos_idx`` counts them)."""
        uid, pos_idx = stream["uid"].numpy(), stream["pos_idx"].numpy()
        return {"seq": build_sequences(self.histories, uid, pos_idx, self.max_len)}

    def user_embeddings(self) -> torch.Tensor:
        if self.training:
            return self._encode_users(np.arange(self.n_users))
        key = self._param_key()
        if self._cache is None or self._cache[0] != key:
            with torch.no_grad():
                self._cache = (key, self._encode_users(np.arange(self.n_users)))
        return self._cache[1]

    def item_embeddings(self) -> torch.Tensor:
        return self.item_table[1:]  # (I, d)

    def _user_states(self, uids: torch.Tensor) -> torch.Tensor:
        """(B, d): the cached table in eval mode, else only the requested users are encoded."""
        return self._encode_users(uids) if self.training else self.user_embeddings()[uids]

    def score(self, uids: torch.Tensor, iids: torch.Tensor) -> torch.Tensor:
        return (self._user_states(uids) * self.item_table[iids + 1]).sum(-1)  # (B,)

    def full_scores(self, uids: torch.Tensor) -> torch.Tensor:
        return self._user_states(uids) @ self.item_table[1:].T  # (B, I)

    def loss(self, batch: Batch) -> torch.Tensor:
        if "seq" not in batch:
            raise KeyError("sasrec batches need 'seq' (B, L): see bridgerec.models.sasrec.build_sequences")
        h = self.encode(batch["seq"])[:, -1]  # (B, d)
        pos = batch["pos"]
        if self.seq_loss == "ce":
            logits = h @ self.item_table[1:].T  # (B, I)
            targets = self.item_table[pos + 1]  # (B, d)
            main = F.cross_entropy(logits, pos)
        else:
            targets = self.item_table[torch.cat([pos[:, None], batch["neg"]], 1) + 1]  # (B, 1+N, d)
            s = torch.einsum("bd,bnd->bn", h, targets)  # (B, 1+N)
            main = bpr_loss(s[:, 0], s[:, 1:])
        return main + self.reg * targets.pow(2).sum() / len(pos)
