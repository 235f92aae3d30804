"""The regression-testing side of FarmService: constraint verdicts when a result arrives,
comparisons, baselines, suite runs and nightly history. server.py's servicer methods call
these with the request message; wire.py converts."""
from __future__ import annotations

import logging
import time
from typing import Dict, List

import sqlalchemy as sa

from hilfarm.constraints import Verdict, evaluate
from hilfarm.v1 import farm_pb2 as pb

from . import auth, changepoints, regression, wire
from .errors import FailedPrecondition, InvalidArgument
from .models import Job, JobEvaluation, JobState, runtime_config
from .submission import check_queue_room
from .job_repository import JobRepository
from .regression_store import RegressionStore
from .suites import SuiteRunner, budgets_from_doc

log = logging.getLogger("hilfarm.controller")


_EVALUATIONS = JobEvaluation.__table__
_STORE_VERDICTS = (sa.update(_EVALUATIONS).where(_EVALUATIONS.c.job_id == sa.bindparam("judged"))
                   .values(verdicts=sa.bindparam("judgement"), evaluated_at=sa.bindparam("at")))


def judge_result(conn: sa.Connection, job: Job, budgets: List[dict]) -> None:
    """Verdicts for a result being stored, by the job's budgets (JobRepository.record_result's
    ``on_result`` hook, called on the connection of the transaction that stores it, with the
    budgets read along with the job)."""
    verdicts: List[Verdict] = evaluate(budgets_from_doc(budgets), job.result or {})
    conn.execute(_STORE_VERDICTS, {"judged": job.id, "judgement": [v.to_dict() for v in verdicts], "at": time.time()})


class RegressionRpcs:
    def __init__(self, jobs: JobRepository, regressions: RegressionStore, suites: SuiteRunner, *,
                 max_queued_jobs: int) -> None:
        self.jobs = jobs
        self.regressions = regressions
        self.suites = suites
        self.max_queued_jobs = max_queued_jobs

    # ------------------------------------------------------------ comparisons and baselines

    def _result(self, job_id: str) -> Job:
        job = self.jobs.get_job(job_id, project=auth.caller().project)
        if job.job_state != JobState.SUCCEEDED or not job.result:
            raise FailedPrecondition(f"job {job_id} is {job.state}; only a job with a result can be compared or accepted")
        return job

    def compare(self, request: pb.CompareJobsRequest) -> pb.Comparison:
        if not request.baseline_job_id or not request.candidate_job_id:
            raise InvalidArgument("CompareJobs needs a baseline job id and a candidate job id")
        base, cand = self._result(request.baseline_job_id), self._result(request.candidate_job_id)
        tol = regression.Tolerances.from_dict(wire.tolerances_from_pb(request.tolerances))
        history = self.suites.noise_history(cand.model_name, cand.device_profile, runtime_config(cand))
        comparison = regression.compare_results(base.result or {}, cand.result or {}, tol,
                                                baseline_job_id=base.id, candidate_job_id=cand.id,
                                                history=history)
        return wire.comparison_to_pb(comparison.to_dict())

    def accept(self, request: pb.AcceptBaselineRequest) -> pb.AcceptBaselineResponse:
        name = request.name.strip() or "main"
        if name.startswith("@"):
            raise InvalidArgument(f"baseline name {name!r}: names starting with @ are references, not names")
        if not request.job_ids:
            raise InvalidArgument("AcceptBaseline needs at least one job id")
        jobs = [self._result(j) for j in request.job_ids]
        rows = self.regressions.accept(name, jobs, suite=request.suite, now=time.time(),
                                         project=auth.caller().project)
        return pb.AcceptBaselineResponse(baselines=[wire.baseline_to_pb(r) for r in rows])

    def list_baselines(self, request: pb.ListBaselinesRequest) -> pb.ListBaselinesResponse:
        rows = self.regressions.list_baselines(name=request.name, model_name=request.model_name,
                                                 profile=request.device_profile, project=auth.caller().project)
        return pb.ListBaselinesResponse(baselines=[wire.baseline_to_pb(r) for r in rows])

    # ------------------------------------------------------------ suites

    def start_suite(self, request: pb.StartSuiteRunRequest) -> pb.SuiteRun:
        spec = wire.suite_spec_from_pb(request.suite)
        check_queue_room(self.jobs, auth.caller().project,
                         len(request.suite.models) * len(request.suite.device_profiles), self.max_queued_jobs)
        run = self.suites.start(spec, trigger=request.trigger or "cli", accept=request.accept,
                                  project=auth.caller().project)
        return wire.suite_run_to_pb(run)

    def get_suite_run(self, run_id: str) -> pb.SuiteRun:
        project = auth.caller().project
        run, cases = self.regressions.get_suite_run(run_id, project=project)
        jobs: Dict[str, pb.Job] = {}
        ids = [c.job_id for c in cases if c.job_id]
        evaluations = self.regressions.evaluations(ids)
        for job_id in ids:
            job = self.jobs.get_job(job_id, project=project)
            jobs[job_id] = wire.add_evaluation(wire.job_to_pb(job), evaluations.get(job_id))
        return wire.suite_run_to_pb(run, [wire.suite_case_to_pb(c, jobs.get(c.job_id)) for c in cases])

    def list_suite_runs(self, request: pb.ListSuiteRunsRequest) -> pb.ListSuiteRunsResponse:
        if request.limit < 0:
            raise InvalidArgument(f"limit is {request.limit}; it must not be negative")
        project = auth.caller().project
        rows = self.regressions.list_suite_runs(suite=request.suite, limit=request.limit or 50, project=project)
        out = pb.ListSuiteRunsResponse()
        for row in rows:
            _, cases = self.regressions.get_suite_run(row.id, project=project)
            out.runs.append(wire.suite_run_to_pb(row, [wire.suite_case_to_pb(c) for c in cases]))
        return out

    # ------------------------------------------------------------ history

    def history(self, request: pb.HistoryRequest) -> pb.HistoryResponse:
        if not request.model_name or not request.device_profile:
            raise InvalidArgument("history needs a model name and a device profile")
        metric = request.metric or "latency.p50"
        if metric not in regression.HISTORY_UNITS:
            raise InvalidArgument(f"history metric {metric!r} is not one of {', '.join(regression.HISTORY_UNITS)}")
        rows = self.regressions.history(request.model_name, request.device_profile,
                                          config=request.runtime_config, limit=request.limit or 365,
                                          project=auth.caller().project)
        out = pb.HistoryResponse(metric=metric, unit=regression.HISTORY_UNITS[metric], method=changepoints.METHOD)
        kept = [r for r in rows if r.values.get(metric) is not None]
        for r in kept:
            out.points.append(pb.HistoryPoint(t=r.finished_at or 0.0, job_id=r.job_id, suite_run_id=r.suite_run_id,
                                              value=float(r.values[metric]), model_sha256=r.model_sha256,
                                              runtime_config=r.runtime_config, outcome=r.outcome))
        for point in changepoints.detect([float(r.values[metric]) for r in kept]):
            at = kept[point.index]
            out.change_points.append(pb.ChangePoint(index=point.index, t=at.finished_at or 0.0, job_id=at.job_id,
                                                    before=point.before, after=point.after, ratio=point.ratio,
                                                    p_value=point.p_value))
        return out
