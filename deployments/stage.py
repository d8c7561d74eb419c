"""The stage deployment: hosts the detectors of one kind (rules, safety classifier, semantic embedder).

One class, deployed under a stable name per detector type (`RuleFilter`, `SafetyClassifier`, `SemanticEmbedder`;
see `deployments.app`). The constructor builds the library's detectors, warmed up (`safepath.assembly`), one
`@serve.batch` method runs them, `reconfigure` applies `user_config`. Stages of one type share a deployment, and so
a model: `safety_model` and `safety_model_full` name the same ONNX file, which the runtime loads once per process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from ray import serve

from deployments.schemas import BatchingConfig
from deployments.service import CancelFlag, StageAnswer, StageCall, StageRunner
from safepath.assembly import build_stages
from safepath.metrics import use_backend
from safepath.profiles import load_profiles
from safepath.settings import RuntimeSettings
from safepath.types import Detection, Trace

_DEFAULTS = BatchingConfig()


@serve.deployment(max_ongoing_requests=64, ray_actor_options={"num_cpus": 0.5})
class StageHost:
    """Runs the named stages of a profiles file on batches of calls from the ingress.

    Args:
        profiles_path: Absolute path of the profiles file (stage definitions).
        stages: Names of the stages this deployment hosts.
    """

    def __init__(self, profiles_path: str, stages: Sequence[str]) -> None:
        detectors = build_stages(load_profiles(profiles_path), stages, RuntimeSettings())
        deployment = serve.get_replica_context().deployment
        self._runner = StageRunner(detectors, deployment=deployment, metrics=use_backend("ray"))

    async def detect(self, stage: str, traces: Sequence[Trace]) -> list[list[Detection]]:
        """Detections per trace from one stage; concurrent calls are batched together. When the caller cancels
        (Serve cancels this task: the ingress's stage timeout, a disconnected client), the call's model rows are
        dropped from its batch, which goes on for the other calls in it."""
        self._runner.call_started()
        cancelled = CancelFlag()
        try:
            answer = await self._detect_batch((stage, list(traces)), cancelled)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        finally:
            self._runner.call_finished()
        if isinstance(answer, BaseException):
            raise answer
        return answer

    @serve.batch(max_batch_size=_DEFAULTS.max_batch_size, batch_wait_timeout_s=_DEFAULTS.batch_wait_timeout_s)
    async def _detect_batch(self, calls: list[StageCall], flags: list[CancelFlag]) -> list[StageAnswer]:
        return await self._runner.run(calls, flags)

    def reconfigure(self, user_config: dict) -> None:
        """Live batching knobs from serve_config.yaml (`user_config`), applied without a restart."""
        config = BatchingConfig.model_validate(user_config or {})
        self._detect_batch.set_max_batch_size(config.max_batch_size)
        self._detect_batch.set_batch_wait_timeout_s(config.batch_wait_timeout_s)

    def versions(self) -> dict[str, str]:
        """Version per hosted stage; answering at all means the models are loaded (used by /readyz)."""
        return self._runner.versions

    def model_rows(self) -> dict[str, dict[str, int]]:
        """Per hosted model stage, model inputs run and dropped (their caller stopped waiting) since start."""
        return self._runner.model_rows()

    def batch_sizes(self) -> list[int]:
        """Sizes of the most recent batches, oldest first."""
        return list(self._runner.batch_sizes)

    def batching(self) -> dict:
        """The batching knobs in force."""
        return {
            "max_batch_size": self._detect_batch._get_max_batch_size(),
            "batch_wait_timeout_s": self._detect_batch._get_batch_wait_timeout_s(),
        }
