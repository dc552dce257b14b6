"""Config of the method plugins (wired into the root Config as ``method``).

``method.name`` picks the plugin and ``method.loss_weights`` weighs its named losses; the nested
sections hold each plugin's own settings (``rlmrec`` for ``rlmrec-con``/``rlmrec-gen``, ``darec``
for ``darec``) and where the LLM-side semantic embeddings come from (``semantic``).
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import model_validator

from bridgerec._config_base import Section

__all__ = ["MethodConfig", "SemanticInputConfig", "RLMRecConfig", "DaRecConfig", "BIGRecConfig", "BDLMConfig",
           "Llama4RecConfig"]


class SemanticInputConfig(Section):
    source: Literal["auto", "profiles", "item_text"] = "auto"
    """LLM-side (semantic) embeddings of users and items: `profiles` = text-encoder embeddings of the
    LLM profiles from the augmentation stages (profiles + text_embeddings; an error when there are
    none); `item_text` = encoder(title + text) per item and, per user, the mean of the user's
    TRAINING items' embeddings; `auto` = profiles where an entity has one, `item_text` otherwise."""
    embeddings_dir: Optional[str] = None
    """A finished text_embeddings stage output directory to read; None picks the newest one of this
    dataset and encoder under <augment root>/text_embeddings/ (preferring one with profiles)."""


class RLMRecConfig(Section):
    temperature: float = 0.2
    """τ of the InfoNCE losses (rlmrec-con alignment, rlmrec-gen reconstruction)."""
    hidden_dim: Optional[int] = None
    """Hidden width of the MLP between the semantic and collaborative spaces; None = the mean of the two dims."""
    align_users: bool = True
    """Ablation switch: align (con) / reconstruct (gen) user representations."""
    align_items: bool = True
    """Ablation switch: align (con) / reconstruct (gen) item representations. With both switches
    off the method has no alignment loss (it trains like `base`)."""
    mask_ratio: float = 0.2
    """rlmrec-gen: fraction of the batch's distinct users and positive items that are masked and
    reconstructed (at least 2 of each, so InfoNCE has a negative)."""

    @model_validator(mode="after")
    def _ranges(self) -> "RLMRecConfig":
        if self.temperature <= 0:
            raise ValueError("method.rlmrec.temperature must be > 0")
        if not 0 < self.mask_ratio <= 1:
            raise ValueError("method.rlmrec.mask_ratio must be in (0, 1]")
        if self.hidden_dim is not None and self.hidden_dim < 1:
            raise ValueError("method.rlmrec.hidden_dim must be >= 1")
        return self


class DaRecConfig(Section):
    dim: Optional[int] = None
    """Width of the shared and specific parts; None = model.dim."""
    orthogonal: bool = True
    """Ablation switch for the `orth` loss: shared and specific parts of each side are decorrelated."""
    shared: bool = True
    """Ablation switch for the `shared` loss: the two sides' shared parts of an entity are pulled together."""
    global_align: bool = True
    """Ablation switch for the `global` loss: the batch similarity matrices of the two shared parts match."""
    local_align: bool = True
    """Ablation switch for the `local` loss: cluster assignments and cluster-prototype similarities
    of the two shared parts match."""
    enrich: bool = True
    """Recommend with [collaborative; shared part] (adds the `rec_shared` BPR loss on the shared
    part); False recommends with the collaborative embeddings alone."""
    n_clusters: int = 8
    """K: k-means centers of the local structure alignment (per entity type)."""
    kmeans_every: int = 10
    """Refresh the k-means centers every this many training steps (on the detached shared parts of the batch)."""
    kmeans_iters: int = 10
    """Lloyd iterations per refresh (warm-started from the previous centers)."""
    cluster_temperature: float = 0.1
    """Temperature of the soft cluster assignments (softmax over cosine to the centers)."""

    @model_validator(mode="after")
    def _ranges(self) -> "DaRecConfig":
        if self.dim is not None and self.dim < 1:
            raise ValueError("method.darec.dim must be >= 1")
        if self.n_clusters < 2:
            raise ValueError("method.darec.n_clusters must be >= 2")
        if self.kmeans_every < 1 or self.kmeans_iters < 1:
            raise ValueError("method.darec.kmeans_every and method.darec.kmeans_iters must be >= 1")
        if self.cluster_temperature <= 0:
            raise ValueError("method.darec.cluster_temperature must be > 0")
        return self


class BIGRecConfig(Section):
    train_samples: Optional[int] = 1024
    """Instruction examples the LLM is tuned on: N distinct users, one random (history -> next item)
    window each (the paper's few-shot setting, 1,024 samples); None = every window of every user."""
    history_len: int = 10
    """Most recent items the prompt shows (oldest first)."""
    max_length: int = 128
    """Most tokens of one instruction example (prompt cut from the left; the target always survives)."""
    max_new_tokens: int = 32
    """Most tokens generated per user (a title is short)."""
    num_beams: int = 1
    """Titles per user: 1 = greedy; N > 1 = beam search (N beams through the engine), each beam's
    grounded ranking merged by rank (every beam's first item, then every beam's second, ...)."""
    ground_with: Literal["encoder", "llm_hidden"] = "encoder"
    """How the generated title and the item titles are embedded for L2 grounding: `encoder` = the text
    encoder (encoder.*); `llm_hidden` = the base LLM's last-layer hidden state of the last token
    (the paper's choice)."""
    reweight: Literal["none", "popularity", "domain"] = "popularity"
    """Prior multiplied into the grounding distance: dist x (1 + prior)^(-gamma); `popularity` = the
    min-max normalised share of training interactions; `domain` = the domain model's scores of the
    user's items (user . item of `domain_run`'s embeddings), min-max normalised per user; `none` =
    grounding alone."""
    domain_run: Optional[str] = None
    """The trained domain model for reweight: domain: `runs:/<run id>/model` or `models:/NAME@alias`
    of a `bridgerec train` run on the same dataset, its downloaded `model/` directory, or an .npz
    with `user_emb` and `item_emb`. Its user vectors must not depend on held-out items (MF and
    LightGCN; a sequence model's exported users read the whole history and are refused)."""
    gammas: list[float] = [0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
    """Grid searched for gamma on the VALIDATION split (by train.select_metric)."""
    gamma: Optional[float] = None
    """A fixed gamma (no search); None = search `gammas`."""
    valid_distance: float = 0.5
    """A generation is "valid" when its embedding lies within this L2 distance of an item's
    (reported, not used to rank; 0.5 on unit-normalised encoder embeddings is a close paraphrase)."""

    @model_validator(mode="after")
    def _ranges(self) -> "BIGRecConfig":
        if self.train_samples is not None and self.train_samples < 1:
            raise ValueError("method.bigrec.train_samples must be >= 1 or null (all examples)")
        if self.history_len < 1 or self.max_length < 8 or self.max_new_tokens < 1 or self.num_beams < 1:
            raise ValueError("method.bigrec.history_len, max_new_tokens and num_beams must be >= 1, max_length >= 8")
        if not self.gammas or any(g < 0 for g in self.gammas):
            raise ValueError("method.bigrec.gammas must be a non-empty list of values >= 0")
        if self.gamma is not None and self.gamma < 0:
            raise ValueError("method.bigrec.gamma must be >= 0")
        if self.reweight == "domain" and not self.domain_run:
            raise ValueError("method.bigrec.reweight=domain needs method.bigrec.domain_run (runs:/<run id>/model of "
                             "a bridgerec train run on the same dataset, its model/ directory, or an .npz)")
        return self


class BDLMConfig(Section):
    domain_run: Optional[str] = None
    """The pre-trained domain model the entity tokens are preloaded from (and, with `domain_init:
    run`, the joint domain model starts from): `runs:/<run id>/model` or `models:/NAME@alias` of a
    `bridgerec train` run of `model.name` on the same dataset, its downloaded `model/` directory,
    or an .npz with `user_emb` and `item_emb`. None = the domain model's own random init (an
    ablation: nothing is preloaded from a trained model)."""
    domain_init: Literal["run", "fresh"] = "run"
    """`run`: the joint domain model starts as `domain_run`'s trained model (MF: its tables are the
    exported embeddings; LightGCN: the layer-0 tables whose propagation gives them, solved by
    conjugate gradients); `fresh`: the domain model starts from its random init."""
    history_len: int = 10
    """Most recent training items a prompt shows (entity token + title each, oldest first)."""
    max_length: int = 128
    """Most prompt tokens (oldest history items are dropped until the prompt fits; then cut from the left)."""
    gamma: float = 0.1
    """Weight γ of both mutual-learning losses (`mutual_llm`, `mutual_domain`); method.loss_weights
    multiplies on top."""
    llm_feature: bool = True
    """Concatenate the projected LLM feature of the user's prompt (and the projected item-token rows)
    to the domain embeddings for recommendation (`rec_llm` loss); False = the ablation "no LLM feature
    in the domain model" (the domain embeddings alone recommend)."""
    llm_lr: Optional[float] = None
    """Learning rate of the LLM side (LoRA and entity-token rows); None = train.lr."""
    llm_samples: Optional[int] = None
    """Events of each batch whose prompts run through the LLM for the `llm` loss (the first ones of
    the shuffled batch, a random sample); None = every event. The domain losses always see the
    whole batch: this bounds a step's LLM cost (a 135M LLM on 2 CPU cores: ~8 prompts per step)."""
    feature_batch_size: int = 32
    """Users per batch when the LLM features of all users are recomputed (once per epoch, no grad)."""
    llm_task: Literal["item", "title"] = "item"
    """The `llm` loss: `item` = next-item prediction as a softmax over the item-token rows only;
    `title` = generate the next item's title after the prompt (causal-LM cross-entropy on the title
    tokens, at most `title_max_tokens`)."""
    title_max_tokens: int = 24
    """Most title tokens (end-of-sequence included) a `title` target keeps."""
    entity_ids: Literal["tokens", "text"] = "tokens"
    """How prompts name users and items: `tokens` = the `<u_k>`/`<i_k>` entity tokens (BDLM);
    `text` = the ablation "no entity tokens": plain text ("user 12", "item 34"), the tokenizer gains
    no tokens and the LLM's input never sees the entity rows (the item rows stay the `item` task's
    output head and the LLM side of the items' mutual loss; the user rows are unused)."""
    schedule: Literal["joint", "sequential"] = "joint"
    """`joint` = every loss in every step (deep mutual learning); `sequential` = the ablation "LLM
    then domain model": the first `llm_epochs` epochs train the LLM side only (`llm`, `mutual_llm`
    toward the pre-trained domain model), the rest the domain side only (`rec`, `rec_llm`,
    `mutual_domain`) with the tuned LLM fixed."""
    llm_epochs: int = 1
    """Under `schedule: sequential`, the epochs of the LLM phase (must be below train.epochs)."""

    @model_validator(mode="after")
    def _ranges(self) -> "BDLMConfig":
        if self.history_len < 1 or self.max_length < 8 or self.feature_batch_size < 1:
            raise ValueError("method.bdlm.history_len and feature_batch_size must be >= 1, max_length >= 8")
        if self.gamma < 0:
            raise ValueError("method.bdlm.gamma must be >= 0")
        if self.llm_samples is not None and self.llm_samples < 1:
            raise ValueError("method.bdlm.llm_samples must be >= 1 or null (every event)")
        if self.llm_lr is not None and self.llm_lr <= 0:
            raise ValueError("method.bdlm.llm_lr must be > 0")
        if self.llm_epochs < 1 or self.title_max_tokens < 2:
            raise ValueError("method.bdlm.llm_epochs must be >= 1 and title_max_tokens >= 2")
        return self


class Llama4RecConfig(Section):
    task: Literal["ranking", "rating"] = "ranking"
    """`ranking` = direct recommendation: the LLM reranks the domain model's top candidates;
    `rating` = rating prediction: the LLM rates each held-out (user, item) from the user's rated
    history, blended with a rating domain model's prediction (domain_run: an MF run with
    model.objective=rating); reported as RMSE/MAE, α chosen on validation RMSE."""
    domain_run: Optional[str] = None
    """The trained domain model whose top candidates the LLM reranks (and whose user embeddings
    find the similar users): `runs:/<run id>/model` or `models:/NAME@alias` of a `bridgerec train`
    run on the same dataset, its `model/` directory, or an .npz with `user_emb` and `item_emb`.
    Required. MF and LightGCN give one vector per user (the direct task); a model that conditions
    on histories (SASRec: the sequential task) must be the run's recommender (`models:/...`, which
    holds its weights): each prompt's user vector is then its embedding of the history known at
    that time (never the exported vectors, which read every known item)."""
    train_samples: Optional[int] = 256
    """Listwise instruction examples: N sampled users with >= 2 training items, each with its last
    training item as the target; None = every such user."""
    n_candidates: int = 10
    """Candidates per prompt (the domain model's top items; the paper ranks at most ~10)."""
    history_len: int = 10
    """Most recent items of the user a prompt shows."""
    prompt_aug: bool = True
    """Prompt augmentation: the similar users' recent items and the domain model's order of the
    candidates as a hint; False = the ablation "without prompt augmentation"."""
    n_similar: int = 2
    """Similar users (cosine of the domain user embeddings) whose items a prompt shows."""
    similar_history: int = 3
    """Most recent training items shown per similar user."""
    max_prompt_tokens: int = 320
    """Token budget of one prompt: the oldest history and similar-user items, then the hint, are
    dropped until it fits (the candidates always stay)."""
    max_new_tokens: int = 40
    """Most tokens of a generated ranking (numbers and commas); the rating task generates at most 4."""
    aggregation: Literal["adaptive", "fixed", "llm", "domain"] = "adaptive"
    """How the final order of the candidates is made: `adaptive` = Llama4Rec's per-user α_u from
    the long-tail coefficient (α1, α2 chosen on validation); `fixed` = one α for every user (the
    ablation "without adaptive aggregation", chosen on validation); `llm` = the LLM's order alone
    (α = 1: "instruction tuning alone"); `domain` = the domain model's order (α = 0)."""
    alpha_grid: list[float] = [0.1, 0.3, 0.5, 0.7, 0.9]
    """Values searched for α1 and α2 (`adaptive`) or α (`fixed`) on the VALIDATION split, by
    train.select_metric."""
    select_metric: str = "ndcg@5"
    """The validation metric α is chosen by (`<metric>@<K>`, K in eval.ks; a K within the
    candidate list, since only the candidates' order changes)."""
    tune: bool = True
    """LoRA-tune the LLM on the instruction examples (llm.lora.*, train.*); False = rank with the
    base backbone (zero-shot)."""

    @model_validator(mode="after")
    def _ranges(self) -> "Llama4RecConfig":
        if self.train_samples is not None and self.train_samples < 1:
            raise ValueError("method.llama4rec.train_samples must be >= 1 or null (every user)")
        if not 2 <= self.n_candidates <= 50:
            raise ValueError("method.llama4rec.n_candidates must be in [2, 50]")
        if self.history_len < 1 or self.n_similar < 0 or self.similar_history < 0:
            raise ValueError("method.llama4rec.history_len must be >= 1, n_similar and similar_history >= 0")
        if self.max_prompt_tokens < 16 or self.max_new_tokens < 1:
            raise ValueError("method.llama4rec.max_prompt_tokens must be >= 16 and max_new_tokens >= 1")
        if not self.alpha_grid or any(not 0.0 <= a < 1.0 for a in self.alpha_grid):
            raise ValueError("method.llama4rec.alpha_grid must be a non-empty list of values in [0, 1)")
        return self


class MethodConfig(Section):
    name: str = "base"
    """Method plugin (see `bridgerec methods`): base, rlmrec-con, rlmrec-gen, darec, ..."""
    loss_weights: dict[str, float] = {}
    """Weight per named loss (e.g. {align: 0.1}); a loss not listed has weight 1. Names: base: rec;
    rlmrec-con: rec, align; rlmrec-gen: rec, recon; darec: rec, rec_shared, orth, shared, global, local;
    bigrec, llama4rec: sft (the LLM's instruction loss); bdlm: rec, rec_llm, llm, mutual_llm, mutual_domain."""
    semantic: SemanticInputConfig = SemanticInputConfig()
    """Where the LLM-side embeddings of the alignment methods (rlmrec-*, darec) come from."""
    rlmrec: RLMRecConfig = RLMRecConfig()
    """RLMRec (arXiv 2310.15950) settings: rlmrec-con and rlmrec-gen."""
    darec: DaRecConfig = DaRecConfig()
    """DaRec (arXiv 2408.08231) settings."""
    bigrec: BIGRecConfig = BIGRecConfig()
    """BIGRec (arXiv 2308.08434) settings: the LLM is tuned with LoRA (llm.lora.*, train.*) to write the
    next item's title, which is grounded to items and reweighted."""
    bdlm: BDLMConfig = BDLMConfig()
    """BDLM (arXiv 2311.03778) settings: the LLM (entity tokens preloaded from the domain model, LoRA:
    llm.lora.*, llm.entity_tokens.*) and the domain model trained jointly by deep mutual learning."""
    llama4rec: Llama4RecConfig = Llama4RecConfig()
    """Llama4Rec (arXiv 2401.13870) settings: the LLM is LoRA-tuned (llm.lora.*, train.*) to rank the
    domain model's candidates listwise; the two orders are blended per user by α_u."""
