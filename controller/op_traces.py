"""Per-operator traces (``submit --profile-ops``): the runtime's own full profile of a job, kept
beside its result.

An agent sends the trace inside its result (OpProfile.trace). The controller stores it as an
artifact, content-addressed like a model (format ``op-trace``), and keeps only its digest and
size in the result, so a job listing never carries megabytes of trace; ``hilfarm jobs trace
JOB`` downloads it through FarmService.DownloadArtifact.
"""
from __future__ import annotations

import hashlib
import time

from hilfarm.v1 import farm_pb2 as pb

from .artifacts import ArtifactStore
from .models import Artifact

TRACE_FORMAT = "op-trace"
_SUFFIX = {"onnxruntime-chrome-trace-json": "json"}


def store_op_trace(artifacts: ArtifactStore, profile: pb.OpProfile, job_id: str, *, project: str) -> None:
    """Move ``profile.trace`` into the artifact store, owned by the job's project; the profile
    keeps its digest and size."""
    data = bytes(profile.trace)
    if not data:
        return
    digest = hashlib.sha256(data).hexdigest()
    if artifacts.stat(digest, project=project) is None:
        suffix = _SUFFIX.get(profile.trace_format, "txt")
        artifacts.receive(Artifact(sha256=digest, size_bytes=len(data), format=TRACE_FORMAT,
                                   filename=f"{job_id}.op-trace.{suffix}", created_at=time.time()), [data],
                          project=project)
    profile.trace_sha256 = digest
    profile.trace_bytes = len(data)
    profile.ClearField("trace")
