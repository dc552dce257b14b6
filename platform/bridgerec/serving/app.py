"""The recommender app: a FastAPI ingress composing the Retriever and Grounder through handles.

``build_app(RecommenderArgs(...))`` returns a Ray Serve ``Application`` (``serve run``,
``serve deploy`` and ``bridgerec serve`` all go through it; ``serve_apps/recommender.py`` is the
import path the YAML names). Endpoints (all JSON; every answer carries a ``request_id``: Ray Serve's,
also in its ``X-Request-ID`` response header, or the caller's ``X-Request-ID``)::

    POST /v1/recommend       {user_id | history, k, strategy, exclude_seen, exclude}
    POST /v1/similar-items   {item_id, k}
    POST /v1/ground          {text, k}
    GET  /v1/items/{item_id}
    GET  /v1/users/{user_id} the user's known items (what is excluded as seen), the most recent ``limit``, oldest first
    GET  /v1/strategies      the strategies this app can run (and the registered ones it cannot), the default
    GET  /                   a page for people: a user's history and each strategy's list side by side
    GET  /healthz            the ingress is up
    GET  /readyz             every deployment answers
    GET  /docs               OpenAPI (Swagger UI); /openapi.json the schema

Errors are 4xx with a ``detail`` that says why: 401 (auth), 404 (unknown user without history,
unknown item), 413 (body too large), 422 (k out of range, empty/oversized history, unknown
item ids, malformed JSON, unknown strategy). 503 with ``Retry-After`` when a deployment's
queue is full (Ray Serve's ``max_queued_requests``).
"""

from __future__ import annotations

import hmac
import os
import time
import uuid
from typing import Any, Optional

from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from bridgerec.serving.deployments import Grounder, Retriever
from bridgerec.serving.llm import LLMArgs, LLMClient, llm_deployment, resolve_llm
from bridgerec.serving.strategies import Query, Ranked, StrategyContext, run_strategy

__all__ = ["RecommenderArgs", "DeploymentOptions", "build_app", "TOKEN_ENV"]

TOKEN_ENV = "BRIDGEREC_SERVE_TOKEN"
_OPEN_PATHS = ("/", "/healthz", "/readyz")  # the page itself is static; its API calls carry the token


class DeploymentOptions(BaseModel):
    """Ray Serve options of one deployment (``serve run``'s YAML may override them per deployment)."""

    model_config = ConfigDict(extra="forbid")
    num_replicas: Optional[int] = None
    """Fixed replica count; leave None to use autoscaling_config."""
    autoscaling_config: Optional[dict[str, Any]] = None
    """min_replicas, max_replicas, target_ongoing_requests, upscale_delay_s, downscale_delay_s, ..."""
    max_ongoing_requests: Optional[int] = None
    """Requests a replica works on at once."""
    max_queued_requests: Optional[int] = None
    """Requests waiting for a replica; beyond it callers get 503 (never an endless queue)."""
    num_cpus: float = 0.5
    """Logical CPUs each replica reserves."""
    retry_after_s: float = 1.0
    """Retry-After (seconds) of the 503 a caller gets when this deployment's queue is full."""
    runtime_env: Optional[dict[str, Any]] = None
    """Ray runtime environment of the replicas (env_vars, pip, py_modules, ...), e.g. where a strategy plugin lives."""

    def options(self) -> dict[str, Any]:
        actor: dict[str, Any] = {"num_cpus": self.num_cpus}
        if self.runtime_env:
            actor["runtime_env"] = self.runtime_env
        out: dict[str, Any] = {"ray_actor_options": actor,
                               "backpressure_config": {"status_code": 503, "retry_after_s": self.retry_after_s}}
        for key in ("num_replicas", "autoscaling_config", "max_ongoing_requests", "max_queued_requests"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


class RecommenderArgs(BaseModel):
    """Arguments of the recommender app (``args:`` of the Serve YAML, or ``bridgerec serve`` flags)."""

    model_config = ConfigDict(extra="forbid")
    model: str
    """Bundle URI of the domain strategy: models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN/recommender or a directory."""
    tracking_uri: Optional[str] = None
    """MLflow tracking URI the URIs resolve against (default MLFLOW_TRACKING_URI)."""
    default_strategy: str = "domain"
    """Strategy of a request that names none."""
    strategies: dict[str, str] = {}
    """Extra strategies as name -> "module:attribute" (a Strategy object), registered in each ingress replica."""
    strategy_args: dict[str, dict[str, Any]] = {}
    """Settings of the strategies by name, e.g. {bigrec: {run: runs:/RUN, candidates: 1000}} (see each strategy's docs;
    bigrec.run serves a bigrec run's adapter with its gamma and prompt settings)."""
    llm_budget_s: Optional[float] = None
    """Override every budgeted strategy's time budget (seconds) before it falls back to domain."""
    max_k: int = 100
    """Largest k a request may ask for."""
    max_history: int = 200
    """Longest item history a request may send."""
    max_body_bytes: int = 65_536
    """Larger request bodies get 413."""
    auth_token: Optional[str] = None
    """Bearer token every request (but /healthz and /readyz) must send; default the BRIDGEREC_SERVE_TOKEN
    environment variable; None and unset: no auth. Never logged."""
    cors_origins: list[str] = []
    """Origins allowed by CORS; empty: CORS off."""
    grounding: bool = True
    """Deploy the Grounder (needs the bundle's grounding index)."""
    llm: Optional[LLMArgs] = None
    """The LLM deployment (vLLM through ray.serve.llm, or transformers) for the LLM strategies
    (generate-ground, and the methods' own); None: no LLM, and those strategies fall back to domain."""
    batching: bool = True
    """Search concurrent requests as one batch (@serve.batch) in the Retriever and Grounder."""
    max_batch_size: int = 64
    """Largest batch of one search."""
    batch_wait_timeout_s: float = 0.0
    """How long a batch waits to fill. 0: a batch is whatever queued while the previous one ran,
    so a lone request pays no wait (0.002 added ~3.6 ms to the p50 at concurrency 1 here)."""
    retrieval: dict[str, Any] = {}
    """Search-time retrieval settings (e.g. hnsw_ef_search, ivf_nprobe)."""
    retriever: DeploymentOptions = DeploymentOptions(
        autoscaling_config={"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 8},
        max_ongoing_requests=32, max_queued_requests=128)
    """Options of the Retriever deployment."""
    grounder: DeploymentOptions = DeploymentOptions(num_replicas=1, max_ongoing_requests=16, max_queued_requests=64)
    """Options of the Grounder deployment."""
    ingress: DeploymentOptions = DeploymentOptions(num_replicas=1, max_ongoing_requests=128, max_queued_requests=256,
                                                   num_cpus=0.5)
    """Options of the Recommender (HTTP ingress) deployment."""


# ----------------------------------------------------------------------------------- schemas
class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: Optional[str] = Field(None, description="a user the model knows")
    history: Optional[list[str]] = Field(None, description="item ids the user interacted with (for users the model does not know)")
    k: int = Field(10, description="how many items")
    strategy: Optional[str] = Field(None, description="serving strategy (default: the app's default_strategy)")
    exclude_seen: bool = Field(True, description="leave out items the user is known to have interacted with")
    exclude: list[str] = Field([], description="item ids never to return")


class SimilarRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item_id: str
    k: int = 10


class GroundRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(..., description="free text: a generated title, a search query")
    k: int = 10


class Item(BaseModel):
    rank: int
    item_id: str
    title: str
    score: float


class RecommendResponse(BaseModel):
    request_id: str
    strategy: str
    fallback: bool = False
    fallback_reason: Optional[str] = None
    generated: Optional[str] = Field(None, description="what an LLM strategy generated (e.g. the title it grounded)")
    details: Optional[dict[str, Any]] = Field(None, description="a strategy's own figures (llama4rec: alpha_u, the user's "
                                              "long-tail weight, ell_u, known_items and the LLM's order llm_order)")
    model: dict[str, Optional[str]]
    items: list[Item]


def _unprocessable(detail: str) -> HTTPException:
    return HTTPException(status_code=422, detail=detail)


# ----------------------------------------------------------------------------------- the app
def _route(request: Request) -> str:
    """The request's path inside the app (without the app's route prefix, e.g. ``/llm``)."""
    path, root = request.url.path, request.scope.get("root_path", "")
    return path[len(root):] or "/" if root and path.startswith(root) else path


def _fastapi() -> FastAPI:
    api = FastAPI(title="bridgerec recommender", version="1",
                  description="LLM + domain-model recommendations: domain retrieval, text grounding and "
                              "LLM strategies composed on Ray Serve.")

    @api.middleware("http")
    async def _guard(request: Request, call_next):
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex
        request.state.request_id = rid
        ingress = request.app.state.ingress
        if _route(request) not in _OPEN_PATHS and not ingress.authorized(request.headers.get("authorization")):
            return JSONResponse({"detail": "missing or wrong bearer token", "request_id": rid}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > ingress.args.max_body_bytes:
            return JSONResponse({"detail": f"request body of {length} bytes exceeds the limit of "
                                 f"{ingress.args.max_body_bytes}", "request_id": rid}, status_code=413)
        return await call_next(request)

    @api.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException):
        rid = getattr(request.state, "request_id", "")
        return JSONResponse({"detail": exc.detail, "request_id": rid}, status_code=exc.status_code, headers=exc.headers)

    @api.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        rid = getattr(request.state, "request_id", "")
        reasons = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors())
        return JSONResponse({"detail": reasons or "invalid request", "errors": jsonable_encoder(exc.errors()),
                             "request_id": rid}, status_code=422)

    return api


class _Metrics:
    """Request count, latency, fallbacks and 503s per strategy on Ray's metrics endpoint."""

    def __init__(self):
        from ray.util import metrics

        self.requests = metrics.Counter("bridgerec_requests", "recommend requests answered", tag_keys=("strategy",))
        self.fallbacks = metrics.Counter("bridgerec_fallbacks", "requests answered by the domain fallback",
                                         tag_keys=("strategy",))
        self.overload = metrics.Counter("bridgerec_overloaded", "requests refused with 503", tag_keys=("endpoint",))
        self.latency = metrics.Histogram("bridgerec_latency_s", "recommend latency (s)",
                                         boundaries=[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
                                         tag_keys=("strategy",))

    def observe(self, strategy: str, fallback: bool, seconds: float) -> None:
        tags = {"strategy": strategy}
        self.requests.inc(1, tags)
        self.latency.observe(seconds, tags)
        if fallback:
            self.fallbacks.inc(1, tags)

    def overloaded(self, endpoint: str) -> None:
        self.overload.inc(1, {"endpoint": endpoint})


api = _fastapi()


@serve.deployment(name="Recommender")
@serve.ingress(api)
class Recommender:
    def __init__(self, args: dict, bundle: dict, retriever: Any, grounder: Any = None, llm: Any = None,
                 llm_info: Optional[dict] = None):
        from bridgerec.serving.bundle import load_catalog, open_bundle

        # The registry object of the strategies module as imported in this replica: Serve ships this
        # class by value, and a module-level object it names would arrive as a copy.
        from bridgerec.serving import strategies as strategies_module

        self.args = RecommenderArgs(**args)
        self.strategies = strategies_module.STRATEGIES
        for name, target in self.args.strategies.items():
            if name not in self.strategies:
                self.strategies.register_lazy(name, target)
            self.strategies.get_plugin(name)  # import now: a bad path fails the deployment, not a request
        self.strategies.validate(self.args.default_strategy)
        root, version = open_bundle(bundle)
        self.catalog = load_catalog(root, version)
        token = self.args.auth_token or os.environ.get(TOKEN_ENV) or None
        self._token = token.encode() if token else None
        self.ctx = StrategyContext({"retriever": retriever, "grounder": grounder,
                                    "llm": LLMClient(llm, llm_info) if llm is not None else None}, catalog=self.catalog,
                                   args=self.args.strategy_args)
        self._metrics = _Metrics()
        api.state.ingress = self
        if self.args.cors_origins:
            from fastapi.middleware.cors import CORSMiddleware

            api.add_middleware(CORSMiddleware, allow_origins=self.args.cors_origins, allow_methods=["GET", "POST"],
                               allow_headers=["Authorization", "Content-Type"])

    def authorized(self, header: Optional[str]) -> bool:
        if self._token is None:
            return True
        scheme, _, value = (header or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self._token)

    # -- endpoints -------------------------------------------------------------------------
    @api.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz(self) -> JSONResponse:
        status = {}
        for name, handle in self.ctx.handles.items():
            if handle is None:
                continue
            try:
                status[name] = await (handle.ping() if isinstance(handle, LLMClient) else handle.ping.remote())
            except Exception as exc:  # noqa: BLE001 - reported, not raised
                status[name] = f"error: {type(exc).__name__}"
        ready = all(v == "ok" for v in status.values())
        return JSONResponse({"ready": ready, "deployments": status, "model": self.catalog.version.as_dict()},
                            status_code=200 if ready else 503)

    @api.post("/v1/recommend", response_model=RecommendResponse)
    async def recommend(self, body: RecommendRequest, request: Request) -> RecommendResponse:
        strategy = body.strategy or self.args.default_strategy
        if strategy not in self.strategies:
            raise _unprocessable(self.strategies.unknown_message(strategy))
        q = self._query(body)
        t0 = time.perf_counter()
        ranked = await self._call(run_strategy(strategy, self.ctx, q, self.args.llm_budget_s), strategy)
        self._metrics.observe(strategy, ranked.fallback, time.perf_counter() - t0)
        return self._response(request, ranked)

    @api.post("/v1/similar-items", response_model=RecommendResponse)
    async def similar_items(self, body: SimilarRequest, request: Request) -> RecommendResponse:
        self._check_k(body.k)
        iids, unknown = self.catalog.iids([body.item_id])
        if unknown:
            raise HTTPException(404, f"unknown item_id {body.item_id!r}")
        ids, scores = await self._call(self.ctx.handle("retriever").item_vector_topk.remote(int(iids[0]), body.k), "similar")
        return self._response(request, Ranked(ids, scores, "similar-items"))

    @api.post("/v1/ground", response_model=RecommendResponse)
    async def ground(self, body: GroundRequest, request: Request) -> RecommendResponse:
        self._check_k(body.k)
        if not body.text.strip():
            raise _unprocessable("text is empty")
        if len(body.text) > 2_000:
            raise _unprocessable(f"text has {len(body.text)} characters; the limit is 2000")
        if self.ctx.handles.get("grounder") is None:
            raise HTTPException(404, "this app serves no grounding index (grounding: false)")
        ids, scores = await self._call(self.ctx.handle("grounder").ground.remote(body.text, body.k), "ground")
        return self._response(request, Ranked(ids, scores, "ground"))

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(self) -> HTMLResponse:
        from bridgerec.serving.page import PAGE

        return HTMLResponse(PAGE)

    @api.get("/v1/strategies")
    async def strategies_list(self, request: Request) -> dict:
        available, unavailable = [], {}
        for name in self.strategies.names():
            missing = self.ctx.missing(self.strategies.get_plugin(name))
            if missing:
                unavailable[name] = f"this app has no {' or '.join(missing)} deployment (it falls back to domain)"
            else:
                available.append(name)
        return {"request_id": request.state.request_id, "default": self.args.default_strategy,
                "strategies": available, "unavailable": unavailable}

    @api.get("/v1/users/{user_id}")
    async def user(self, user_id: str, request: Request, limit: int = 50) -> dict:
        uid = self.catalog.uid(user_id)
        if uid is None:
            raise HTTPException(404, f"unknown user_id {user_id!r}")
        known = self.catalog.history(uid)  # oldest first (id order for bundles without histories.npz)
        recent = known[max(0, len(known) - max(0, min(limit, 500))):]
        return {"request_id": request.state.request_id, "user_id": user_id, "n_known": int(len(known)),
                "history": [{"item_id": str(self.catalog.item_ids[i]), "title": str(self.catalog.titles[i])}
                            for i in recent]}

    @api.get("/v1/items/{item_id}")
    async def item(self, item_id: str, request: Request) -> dict:
        iids, unknown = self.catalog.iids([item_id])
        if unknown:
            raise HTTPException(404, f"unknown item_id {item_id!r}")
        i = int(iids[0])
        return {"request_id": request.state.request_id, "item_id": item_id, "title": str(self.catalog.titles[i]),
                "popularity": int(self.catalog.popularity[i]), "model": self.catalog.version.as_dict()}

    # -- helpers ---------------------------------------------------------------------------
    def _check_k(self, k: int) -> None:
        if not 1 <= k <= self.args.max_k:
            raise _unprocessable(f"k must lie in [1, {self.args.max_k}], got {k}")

    def _query(self, body: RecommendRequest) -> Query:
        self._check_k(body.k)
        excl, unknown = self.catalog.iids(body.exclude)
        if unknown:
            raise _unprocessable(f"exclude holds unknown item ids: {unknown[:10]}")
        uid = self.catalog.uid(body.user_id) if body.user_id is not None else None
        if body.history is not None:
            if not body.history:
                raise _unprocessable("history is empty; send at least one item id (or a known user_id)")
            if len(body.history) > self.args.max_history:
                raise _unprocessable(f"history has {len(body.history)} items; the limit is {self.args.max_history}")
            hist, unknown = self.catalog.iids(body.history)
            if unknown:
                raise _unprocessable(f"history holds unknown item ids: {unknown[:10]}")
        else:
            hist = []
        if uid is None and not len(hist):
            if body.user_id is None:
                raise _unprocessable("send a user_id or a history of item ids")
            raise HTTPException(404, f"unknown user_id {body.user_id!r} and no history to describe them")
        exclude = list(excl)
        if uid is not None and body.exclude_seen:
            exclude += self.catalog.seen(uid).tolist()
        if uid is not None and len(hist):  # a known user with extra recent items: the model's user vector, all excluded
            exclude += list(hist)
            hist_for_vector: list[int] = []
        else:
            hist_for_vector = [int(i) for i in hist]
        return Query(uid=uid, history=hist_for_vector, k=body.k, exclude=[int(i) for i in exclude])

    async def _call(self, awaitable: Any, what: str) -> Any:
        from ray.serve.exceptions import BackPressureError

        try:
            return await awaitable
        except BackPressureError as exc:
            self._metrics.overloaded(what)
            retry = max(1, int(round(getattr(exc, "retry_after_s", None) or 1)))
            raise HTTPException(503, "the recommender is overloaded; retry shortly", headers={"Retry-After": str(retry)})

    def _response(self, request: Request, ranked: Ranked) -> RecommendResponse:
        items = [Item(rank=r, item_id=str(self.catalog.item_ids[i]), title=str(self.catalog.titles[i]), score=float(s))
                 for r, (i, s) in enumerate(zip(ranked.iids, ranked.scores), 1)]
        return RecommendResponse(request_id=request.state.request_id, strategy=ranked.strategy, fallback=ranked.fallback,
                                 fallback_reason=ranked.reason, generated=ranked.generated, details=ranked.details,
                                 model=self.catalog.version.as_dict(), items=items)


def build_app(args: RecommenderArgs | dict) -> Any:
    """The Serve application for ``args`` (a RecommenderArgs or its dict, as ``serve run`` passes it)."""
    args = args if isinstance(args, RecommenderArgs) else RecommenderArgs(**args)
    from bridgerec.serving.bigrec import apply_bigrec_run, check_grounding_encoder
    from bridgerec.serving.bundle import bundle_meta, pin_bundle
    from bridgerec.serving.exports import one_adapter
    from bridgerec.serving.llama4rec import apply_llama4rec_run

    one_adapter(args)
    args = apply_bigrec_run(args)  # strategy_args.bigrec.run: the run's adapter, gamma and prompt settings
    args = apply_llama4rec_run(args)  # strategy_args.llama4rec.run: its adapter, prompt settings and alpha rule
    bundle = pin_bundle(args.model, args.tracking_uri)
    if args.strategy_args.get("bigrec", {}).get("encoder"):  # set from a run: its items must be embedded alike
        check_grounding_encoder(args.strategy_args["bigrec"], bundle_meta(bundle))
    batching = {"enabled": args.batching, "max_batch_size": args.max_batch_size,
                "batch_wait_timeout_s": args.batch_wait_timeout_s}
    common = (bundle, batching, args.retrieval)
    retriever = Retriever.options(**args.retriever.options()).bind(*common)
    grounder = Grounder.options(**args.grounder.options()).bind(*common) if args.grounding else None
    llm = llm_info = None
    if args.llm is not None:
        resolved = resolve_llm(args.llm)  # builds a packaged backbone once, here on the driver
        llm, llm_info = llm_deployment(args.llm, resolved), resolved.as_dict()
    return Recommender.options(**args.ingress.options()).bind(args.model_dump(), bundle, retriever, grounder, llm,
                                                              llm_info)
