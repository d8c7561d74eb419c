"""The Ingress deployment: the versioned HTTP API and the Python handle API over one `FilterService`.

Routes parse the body, call the service, map the answer to HTTP (deployments/http.py documents the statuses).
Handle callers (`serve.get_app_handle("safepath")`) use `filter` and `filter_batch`, which return the same
`FilterResult`s as the in-process `SafePathFilter`.
"""

# No `from __future__ import annotations` here: FastAPI reads the route signatures Serve rebuilds for class-based
# views, and string annotations there turn the JSON body into a query parameter.
import asyncio
import hmac
from collections.abc import Mapping, Sequence
from typing import Literal

from fastapi import FastAPI, Header, Query, Request, WebSocket
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.responses import Response

from deployments import http
from deployments.schemas import (
    BatchFilterRequest,
    BatchFilterResponse,
    ErrorResponse,
    IngressConfig,
    ProfilesResponse,
    ReadyResponse,
)
from deployments.service import BatchOutcome, FilterService, remote_stage
from safepath import __version__
from safepath.access import load_keys
from safepath.assembly import assemble
from safepath.filter import as_request
from safepath.metrics import use_backend
from safepath.pipeline import AsyncStage, local_stage
from safepath.profiles import SafetyProfile, load_profiles
from safepath.proxy.app import chat_completions, list_models, stream_socket, unsupported
from safepath.proxy.config import ProxyConfig
from safepath.proxy.service import ChatProxy
from safepath.settings import RuntimeSettings
from safepath.streaming import RuleHoldback, astream, holdback_for
from safepath.types import FilterRequest, FilterResult

api = http.install(
    FastAPI(
        title="CoT SafePath",
        version=__version__,
        description="Judges the chain-of-thought of language models: allow, flag, redact or block.",
    )
)
_ERRORS = {
    413: {"model": ErrorResponse, "description": "Content or body too large."},
    422: {"model": ErrorResponse, "description": "Invalid body, empty content or unknown profile."},
    503: {"model": ErrorResponse, "description": "A stage failed under a fail-closed profile; results are blocked."},
}


# Helpers the methods call live in deployments.service: Serve ships this class to replicas by value (the module
# name `Ingress` is the Deployment, not the class), and names defined only in this module may not travel with it.
@serve.deployment(max_ongoing_requests=128, ray_actor_options={"num_cpus": 0.25})
@serve.ingress(api)
class Ingress:
    """Validates, segments and runs the rule stage in-process; calls the stage deployments for the models.

    Args:
        profiles_path: Absolute path of the profiles file.
        inline_stages: Stages built and run in this replica (the rules, unless a RuleFilter deployment hosts them).
        deployments: Handle per stage deployment name.
        stage_deployments: Stage name -> the deployment that hosts it.
    """

    def __init__(
        self,
        profiles_path: str,
        inline_stages: Sequence[str],
        deployments: Mapping[str, DeploymentHandle],
        stage_deployments: Mapping[str, str],
    ) -> None:
        profiles = load_profiles(profiles_path)
        settings = RuntimeSettings()
        load_keys(settings)  # an unusable API key setting fails the replica at start, not every request after
        # The cache is built even where SAFEPATH_CACHE_ENABLED is off, so user_config can turn it on live.
        parts = assemble(profiles, settings, stages=inline_stages, metrics=use_backend("ray"), switchable_cache=True)
        stages: dict[str, AsyncStage] = {name: local_stage(d.detect) for name, d in parts.detectors.items()}
        stages.update({name: remote_stage(deployments[dep], name) for name, dep in stage_deployments.items()})
        self._audit_token = settings.audit_token
        self.audit = parts.audit
        self.service = FilterService(
            profiles,
            stages,
            probes={dep: handle.versions.remote for dep, handle in deployments.items()},
            versions=parts.versions,
            cache=parts.result_cache,
            cache_enabled=settings.cache_enabled,
            metrics=parts.metrics,
            audit=parts.audit,
        )

    def reconfigure(self, user_config: dict) -> None:
        """Live threshold, fail-mode and stage-timeout overrides from serve_config.yaml (`user_config`)."""
        config = IngressConfig.model_validate(user_config or {})
        self.service.reconfigure(config)
        self._configure_proxy(config.proxy)

    # Python handle API

    async def filter(self, request: FilterRequest | dict | str) -> FilterResult:
        """Judge one trace (a request, its dict form, or plain content under the default profile)."""
        return (await self.filter_batch([request]))[0]

    async def filter_batch(self, requests: Sequence[FilterRequest | dict | str]) -> list[FilterResult]:
        """Judge many traces; results in order. Raises InvalidRequest or UnknownProfile like SafePathFilter."""
        return (await self._run([as_request(r) for r in requests])).results

    # HTTP API

    @api.post("/v1/filter", response_model=FilterResult, responses=_ERRORS, summary="Judge one reasoning trace")
    async def filter_route(self, body: FilterRequest) -> Response:
        outcome = await self._run([body])
        return self._answer(outcome, outcome.results[0])

    @api.post("/v1/filter/batch", response_model=BatchFilterResponse, responses=_ERRORS, summary="Judge many traces")
    async def filter_batch_route(self, body: BatchFilterRequest) -> Response:
        outcome = await self._run(body.requests)
        return self._answer(outcome, BatchFilterResponse(results=outcome.results))

    @api.get("/v1/profiles", response_model=ProfilesResponse, summary="The loaded safety profiles")
    async def profiles_route(self) -> Response:
        return http.json_response(self.service.profile_info())

    @api.get("/healthz", summary="The ingress process is up")
    async def healthz(self) -> Response:
        return http.json_response(b'{"status":"ok"}')

    @api.get("/readyz", response_model=ReadyResponse, responses={503: {"model": ReadyResponse}},
             summary="Models loaded and every stage deployment answering")
    async def readyz(self) -> Response:
        report = await self.service.readiness()
        return http.json_response(report, 200 if report.ready else 503)

    @api.get("/v1/audit/summary", response_model=None, summary="Audit trail: decisions grouped by category, verdict "
             "or profile, with filter rates and top reasons", responses={401: {"model": ErrorResponse},
                                                                          404: {"model": ErrorResponse},
                                                                          503: {"model": ErrorResponse}})
    async def audit_summary(
        self,
        since: str = Query("24h", description="Window: a number and s, m, h or d (e.g. 30m, 24h, 7d)."),
        group_by: Literal["category", "verdict", "profile"] = Query("category"),
        authorization: str | None = Header(None, description="Bearer <SAFEPATH_AUDIT_TOKEN> (no API keys set)"),
        x_safepath_audit_token: str | None = Header(None, description="<SAFEPATH_AUDIT_TOKEN> (with API keys set, "
                                                    "Authorization carries the API key)"),
    ) -> Response:
        from safepath.audit import parse_since
        from safepath.errors import AuditUnavailable

        if self.audit is None or not self._audit_token:
            return http.error_response(404, "not_found", "the audit trail or its endpoint is not configured here "
                                       "(SAFEPATH_AUDIT_URL and SAFEPATH_AUDIT_TOKEN)")
        # With API keys set, the access middleware has already checked Authorization against them; the audit
        # token, a second secret, then comes in its own header. Both are needed.
        given = (x_safepath_audit_token or (authorization or "").removeprefix("Bearer ")).encode()
        if not hmac.compare_digest(given, self._audit_token.encode()):  # constant time: the token is a secret
            return http.error_response(401, "unauthorized", "a valid bearer token is required")
        try:
            window = parse_since(since)
        except ValueError as exc:
            return http.error_response(422, "invalid_request", str(exc))
        try:
            summary = await asyncio.to_thread(self.audit.query, window, group_by)  # database I/O off the loop
        except AuditUnavailable as exc:
            return http.error_response(503, "audit_unavailable", str(exc))
        return http.json_response(summary)

    async def _run(self, requests: Sequence[FilterRequest]) -> BatchOutcome:
        return await self.service.run(requests)

    def _answer(self, outcome: BatchOutcome, body: object) -> Response:
        blocked = outcome.closed_failures(self.service.profiles)
        if blocked:
            return http.stage_unavailable(blocked, outcome.results)
        return http.json_response(body)

    # The streaming filter and the reasoning proxy (safepath.streaming, safepath.proxy): the same handlers as the
    # standalone `safepath proxy`, judging through this replica's service (cache, audit, metrics included).

    _proxy: ChatProxy | None = None  # from user_config `proxy:`; without one, /v1/chat/completions answers 503

    async def stream_steps(self, chunks: Sequence[str], profile: str | None = None, context: dict | None = None):
        """Streaming handle API: judge `chunks` as one reasoning stream, yielding each `ReleasedStep` once judged.

        Call as `handle.options(stream=True).stream_steps.remote(chunks)`. Raises UnknownProfile, InvalidRequest.
        """
        resolved = self.service.profiles.get(profile)
        holdback = holdback_for(self.service.profiles, resolved)  # no step out while a rule match may run past it
        async for step in astream(self._judge, resolved, chunks, context=context, holdback=holdback):
            yield step

    @api.post("/v1/chat/completions", response_model=None, summary="OpenAI-compatible chat completions (stream or "
              "not) forwarded to the configured upstream, with the reasoning filtered")
    async def chat_completions_route(self, request: Request) -> Response:
        return await chat_completions(self._proxy, request)

    @api.get("/v1/models", response_model=None, summary="The proxy upstream's models, passed through")
    async def models_route(self, request: Request) -> Response:
        return await list_models(self._proxy, request)

    # Completions and responses would carry reasoning out unjudged: refused, as the standalone proxy refuses them.
    @api.post("/v1/completions", include_in_schema=False)
    async def completions_route(self, request: Request) -> Response:
        return unsupported(request.url.path)

    @api.post("/v1/responses", include_in_schema=False)
    async def responses_route(self, request: Request) -> Response:
        return unsupported(request.url.path)

    @api.websocket("/v1/stream")
    async def stream_route(self, websocket: WebSocket) -> None:
        """The streaming filter over a WebSocket; protocol in safepath/streaming/protocol.py."""
        await stream_socket(websocket, self._judge, self.service.profiles.get, self._holdback)

    def _holdback(self, profile: SafetyProfile) -> RuleHoldback | None:
        return holdback_for(self.service.profiles, profile)  # the profiles as loaded now: live changes apply

    async def _judge(self, requests: Sequence[FilterRequest]) -> list[FilterResult]:
        return (await self._run(list(requests))).results

    def _configure_proxy(self, config: ProxyConfig | None) -> None:
        if config == (self._proxy.config if self._proxy else None):
            return
        old, self._proxy = self._proxy, None
        if config is not None:
            self._proxy = ChatProxy(config, self._judge, lambda name: self.service.profiles.get(name),
                                    holdback_for=self._holdback)
        if old is not None:
            old.close_soon()
