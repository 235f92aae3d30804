"""Running a regression suite on the farm: models x device profiles, judged by budgets and by a
baseline, a suspected regression confirmed by a re-run before it fails anything.

A suite is a ``SuiteSpec`` document (the proto's fields, as wire.message_to_dict writes them).
``hilfarm regress`` sends one with ``StartSuiteRun``; the nightly runner (nightly.py) starts the
suites it was given on their cron schedules. Both go through ``SuiteRunner.start``, so a suite
behaves the same whoever starts it, and every run is recorded (tables in regression_store.py).

Every job of a suite is measured in ``repeats`` fresh processes (5 unless the suite says
otherwise), because the comparison with the baseline takes the repeat as its unit
(regression.py). A suspected regression is confirmed on the device that found it: baseline and
candidate are re-run one repeat at a time, alternating (A B A B ...), pinned to that agent, so
that whatever changes on the device over time touches both alike.

Case outcomes, worst first: ``error`` (the farm could not run it: no agent took the job, the
device or the farm failed), ``model_failed`` (the model or its settings are to blame),
``regression`` (confirmed), ``budget_broken``, ``unknown_budget`` (a budget the device cannot
measure, or one only a simulated sensor measured), ``inconclusive`` (a side was unsteady, or the
change is below the device's noise floor: said so, not a failure by itself), ``no_baseline``
(nothing to compare with: said so, not a failure by itself), ``pass``.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from hilfarm.constraints import FAIL, UNKNOWN, Budget, Verdict, resolve

from . import regression
from .artifacts import ArtifactStore
from .errors import InvalidArgument
from .models import DEFAULT_PROJECT, FailureCategory, Job, JobState
from .regression_store import LAST_ACCEPTED, RegressionStore, SuiteCaseRow, SuiteRunRow, runtime_config
from .scheduler import Scheduler
from .store import Store
from .submission import ModelSpec, plan_run

log = logging.getLogger("hilfarm.controller.suites")

DEFAULT_BASELINE = "main"
DEFAULT_PLACEMENT_TIMEOUT = 300.0
DEFAULT_REPEATS = 5
OUTCOME_ORDER = ("error", "model_failed", "regression", "budget_broken", "unknown_budget", "inconclusive",
                 "no_baseline", "pass")
NOT_FAILURES = ("pass", "no_baseline", "inconclusive")
_FARM_FAULTS = {FailureCategory.INFRASTRUCTURE, FailureCategory.DEVICE_FAULT, FailureCategory.UNSPECIFIED}


def worst(outcomes: Sequence[str]) -> str:
    present = [o for o in OUTCOME_ORDER if o in outcomes]
    return present[0] if present else "pass"


def run_outcome(cases: Sequence[SuiteCaseRow]) -> str:
    """pass, fail (a regression, a broken or unknown budget, a failing model) or error."""
    w = worst([c.outcome for c in cases])
    if w == "error" or not cases:
        return "error"
    return "pass" if w in NOT_FAILURES else "fail"


def budgets_from_doc(docs: Sequence[Dict[str, Any]]) -> List[Budget]:
    return [Budget(name=d.get("name", ""), max=d.get("max"), min=d.get("min"),
                   device_profile=d.get("device_profile", ""), unit=d.get("unit", "")) for d in docs]


def budget_to_doc(b: Budget) -> Dict[str, Any]:
    doc: Dict[str, Any] = {"name": b.name}
    if b.max is not None:
        doc["max"] = b.max
    if b.min is not None:
        doc["min"] = b.min
    if b.device_profile:
        doc["device_profile"] = b.device_profile
    if b.unit:
        doc["unit"] = b.unit
    return doc


def pin_tag(agent_id: str) -> str:
    """The required tag that pins a job to one agent (scheduler.accepts knows it)."""
    return f"agent:{agent_id}"


def suite_settings(spec: Dict[str, Any]) -> Dict[str, Any]:
    """The suite's run settings, with the suite's default number of repeats."""
    settings = dict(spec.get("settings") or {})
    if not settings.get("repeats"):
        settings["repeats"] = DEFAULT_REPEATS
    return settings


def budgets_by_job(jobs: Sequence[Job], budgets: Sequence[Budget]) -> Dict[str, List[Dict[str, Any]]]:
    """Each job's budgets, resolved for its device profile."""
    if not budgets:
        return {}
    return {job.id: [budget_to_doc(b) for b in resolve(budgets, job.device_profile)] for job in jobs}


class SuiteRunner:
    """Starts suite runs in background threads and records them."""

    def __init__(self, store: Store, regressions: RegressionStore, artifacts: ArtifactStore, scheduler: Scheduler,
                 *, default_max_attempts: int = 3, poll_seconds: float = 0.25,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.reg = regressions
        self.artifacts = artifacts
        self.scheduler = scheduler
        self.default_max_attempts = default_max_attempts
        self.poll_seconds = poll_seconds
        self.clock = clock
        self._threads: List[threading.Thread] = []

    # ------------------------------------------------------------ entry points

    def start(self, spec: Dict[str, Any], *, trigger: str = "cli", accept: bool = False,
              project: str = DEFAULT_PROJECT) -> SuiteRunRow:
        """Check the suite, record the run and its jobs (in ``project``), and carry on in a
        background thread."""
        name = (spec.get("name") or "").strip()
        if not name:
            raise InvalidArgument("a suite needs a name")
        run = self.reg.create_suite_run(name, trigger=trigger, baseline=spec.get("baseline") or DEFAULT_BASELINE,
                                        spec=spec, accept=accept, now=self.clock(), project=project)
        try:
            jobs = self._submit(spec, spec.get("models", []), spec.get("device_profiles", []), project=project)
        except Exception as exc:
            run.state, run.outcome, run.finished_at = "finished", "error", self.clock()
            run.message = str(exc)
            self.reg.save_suite_run(run)
            raise
        thread = threading.Thread(target=self._run_logged, args=(run, spec, jobs), daemon=True,
                                  name=f"suite-{name}")
        self._threads.append(thread)
        thread.start()
        return run

    def run_blocking(self, spec: Dict[str, Any], *, trigger: str = "cli", accept: bool = False,
                     project: str = DEFAULT_PROJECT) -> SuiteRunRow:
        run = self.start(spec, trigger=trigger, accept=accept, project=project)
        self._threads[-1].join()
        return self.reg.get_suite_run(run.id)[0]

    def join(self, timeout: float = 5.0) -> None:
        for thread in list(self._threads):
            thread.join(timeout)

    # ------------------------------------------------------------ the run

    def _submit(self, spec: Dict[str, Any], models: Sequence[Dict[str, Any]], profiles: Sequence[str],
                settings: Optional[Dict[str, Any]] = None, extra_tags: Sequence[str] = (), *,
                project: str) -> List[Job]:
        run, jobs = plan_run(
            self.artifacts,
            models=[ModelSpec(m.get("sha256", ""), m.get("name", ""), m.get("format", "")) for m in models],
            device_profiles=list(profiles),
            settings=dict(settings if settings is not None else suite_settings(spec)),
            required_tags=list(spec.get("required_tags", [])) + list(extra_tags),
            max_attempts=0,
            default_max_attempts=self.default_max_attempts,
            now=self.clock(),
            project=project,
        )
        self.store.add_run(run, jobs)
        self.reg.add_budgets(budgets_by_job(jobs, budgets_from_doc(spec.get("constraints", []))),
                             spec.get("constraint_set", ""))
        self.scheduler.notify_work()
        return jobs

    def _run_logged(self, run: SuiteRunRow, spec: Dict[str, Any], jobs: List[Job]) -> None:
        try:
            self._run(run, spec, jobs)
        except Exception as exc:
            log.exception("suite run %s (%s) failed", run.id, run.suite)
            run.state, run.outcome, run.finished_at = "finished", "error", self.clock()
            run.message = f"the controller failed while running the suite: {type(exc).__name__}: {exc}"
            self.reg.save_suite_run(run)

    def _wait(self, job_ids: Sequence[str], timeout: float) -> Tuple[Dict[str, Job], Dict[str, str]]:
        """Wait until every job is finished. A job still queued after ``timeout`` is cancelled
        and its reason (why no agent took it) returned."""
        started = time.monotonic()
        stuck: Dict[str, str] = {}
        while True:
            generation = self.scheduler.change_generation
            jobs = {j: self.store.get_job(j) for j in job_ids}
            if all(j.job_state.finished for j in jobs.values()):
                return jobs, stuck
            if self.scheduler.stopping:
                raise RuntimeError("the controller is shutting down")
            if time.monotonic() - started > timeout:
                queued = [j for j in jobs.values() if j.job_state == JobState.QUEUED]
                notes = self.scheduler.placement_notes(queued)
                for job in queued:
                    why = "; ".join(notes.get(job.id, [])) or "no agent with this profile is registered"
                    stuck[job.id] = f"no agent took the job within {timeout:g} s ({why})"
                    try:
                        self.store.cancel_job(job.id, now=self.clock())
                    except Exception:  # finished meanwhile
                        pass
                timeout = float("inf")  # running jobs are bounded by their own limits
            self.scheduler.wait_for_change(self.poll_seconds, since=generation)

    def _run(self, run: SuiteRunRow, spec: Dict[str, Any], jobs: List[Job]) -> None:
        tol = regression.Tolerances.from_dict(spec.get("tolerances"))
        timeout = float(spec.get("placement_timeout_seconds") or DEFAULT_PLACEMENT_TIMEOUT)
        finished, stuck = self._wait([j.id for j in jobs], timeout)
        evaluations = self.reg.evaluations(finished)
        ref = run.baseline or DEFAULT_BASELINE
        cases: List[SuiteCaseRow] = []
        suspects: List[Tuple[SuiteCaseRow, Job, Job]] = []
        for position, submitted in enumerate(jobs):
            job = finished[submitted.id]
            config = runtime_config(job)
            case = SuiteCaseRow(suite_run_id=run.id, position=position, model_name=job.model_name,
                                model_sha256=job.model_sha256, device_profile=job.device_profile,
                                runtime_config=config, job_id=job.id, finished_at=job.finished_at,
                                duration_seconds=(job.finished_at or 0) - (job.started_at or job.finished_at or 0))
            cases.append(case)
            if job.job_state != JobState.SUCCEEDED:
                failure = job.failure
                if job.id in stuck:
                    case.outcome, case.message = "error", stuck[job.id]
                elif failure is not None and failure.category not in _FARM_FAULTS:
                    case.outcome = "model_failed"
                    case.message = f"the job failed [{failure.category.value}]: {failure.message}"
                else:
                    case.outcome = "error"
                    case.message = (f"the farm could not run the job [{failure.category.value}]: {failure.message}"
                                    if failure else f"the job ended {job.state}")
                continue
            case.values = regression.headline_values(job.result or {})
            evaluation = evaluations.get(job.id)
            case.verdicts = list(evaluation.verdicts or []) if evaluation else []
            baseline = self.reg.find_baseline(ref, job.model_name, job.device_profile, config, project=run.project)
            if baseline is None:
                case.outcome = "no_baseline"
                case.message = (f"no baseline {ref!r} for {job.model_name} on {job.device_profile} ({config}); "
                                "run with --accept to make this run the baseline")
            else:
                case.baseline_job_id = baseline.job_id
                base_job = self.store.get_job(baseline.job_id)
                history = self.noise_history(job.model_name, job.device_profile, config)
                comparison = regression.compare_results(base_job.result or {}, job.result or {}, tol,
                                                        baseline_job_id=base_job.id, candidate_job_id=job.id,
                                                        history=history)
                case.comparison = comparison.to_dict()
                if comparison.regression and not spec.get("no_confirm"):
                    suspects.append((case, job, base_job))
                case.outcome = outcome_of(comparison)
                case.message = comparison.summary
        if suspects:
            self._confirm(spec, suspects, tol, timeout, project=run.project)
        for case in cases:
            self._judge_budgets(case)
        run.state, run.finished_at = "finished", self.clock()
        run.outcome = run_outcome(cases)
        if run.accept and run.outcome != "error":
            name = DEFAULT_BASELINE if ref == LAST_ACCEPTED else ref
            accepted = [finished[c.job_id] for c in cases if c.job_id in finished
                        and finished[c.job_id].job_state == JobState.SUCCEEDED]
            self.reg.accept(name, accepted, suite=run.suite, now=self.clock(), project=run.project)
            run.accepted = True
        elif run.accept:
            run.message = "the results were not accepted as the baseline: the farm could not run every case"
        self.reg.save_suite_run(run, cases)
        log.info("suite run %s (%s): %s", run.id, run.suite, run.outcome)

    def noise_history(self, model_name: str, profile: str, config: str) -> regression.NoiseHistory:
        """The between-repeat spreads of this device × model × configuration's recent runs."""
        rows = self.reg.history(model_name, profile, config=config, limit=regression.NOISE_HISTORY_RUNS)
        return regression.noise_history([r.values for r in rows])

    @staticmethod
    def _judge_budgets(case: SuiteCaseRow) -> None:
        if case.outcome in ("error", "model_failed"):
            return
        verdicts = [Verdict.from_dict(v) for v in case.verdicts]
        broken = [v for v in verdicts if v.gating_status == FAIL]
        unknown = [v for v in verdicts if v.gating_status == UNKNOWN]
        notes = []
        if broken:
            notes.append("budget broken: " + ", ".join(f"{v.constraint} {v.comparison} {v.budget:g}" for v in broken))
        if unknown:
            notes.append("unknown: " + ", ".join(f"{v.constraint} ({v.reason})" for v in unknown))
        if notes:
            case.message = "; ".join(notes + ([case.message] if case.message else []))
        if broken and case.outcome != "regression":
            case.outcome = "budget_broken"
        elif unknown and case.outcome in NOT_FAILURES:
            case.outcome = "unknown_budget"

    def _confirm(self, spec: Dict[str, Any], suspects: Sequence[Tuple[SuiteCaseRow, Job, Job]],
                 tol: regression.Tolerances, timeout: float, *, project: str) -> None:
        """Re-run each suspect on the agent that found it, one repeat per job, baseline and
        candidate alternating (A B A B ...), and compare the fresh repeats. Only a regression
        both attempts show fails the case; an artifact confirmed against itself comes out
        clean, because both sides then see the same device at the same times."""
        planned: List[Tuple[SuiteCaseRow, List[Job], List[Job]]] = []
        for case, job, base_job in suspects:
            model = {"sha256": job.model_sha256, "name": job.model_name, "format": job.model_format}
            base_model = {"sha256": base_job.model_sha256, "name": base_job.model_name, "format": base_job.model_format}
            have_baseline_artifact = self.artifacts.stat(base_job.model_sha256, project=project) is not None
            pairs = max(int((job.settings or {}).get("repeats") or DEFAULT_REPEATS), 2)
            one_repeat = dict(job.settings or {}, repeats=1)
            pinned = [pin_tag(job.agent_id)] if job.agent_id else []
            submitted: List[Job] = []
            for _ in range(pairs):  # one run each, in this order: the agent takes them as queued
                if have_baseline_artifact:
                    submitted += self._submit(spec, [base_model], [job.device_profile], settings=one_repeat,
                                              extra_tags=pinned, project=project)
                submitted += self._submit(spec, [model], [job.device_profile], settings=one_repeat,
                                          extra_tags=pinned, project=project)
            bases = submitted[0::2] if have_baseline_artifact else []
            cands = submitted[1::2] if have_baseline_artifact else submitted
            case.confirm_job_ids = [j.id for j in submitted]
            planned.append((case, bases, cands))
        ids = [j.id for _, bases, cands in planned for j in bases + cands]
        finished, stuck = self._wait(ids, timeout)
        for case, bases, cands in planned:
            done_b = [finished[j.id] for j in bases]
            done_c = [finished[j.id] for j in cands]
            if any(j.job_state != JobState.SUCCEEDED for j in done_b + done_c):
                case.message += ("; the confirmation re-run could not complete, so the regression is reported "
                                 "from the first attempt alone")
                continue
            if done_b:
                base_result = joined_result(done_b)
                base_id = ",".join(j.id for j in done_b)
            else:
                base_result = self.store.get_job(case.baseline_job_id).result or {}
                base_id = case.baseline_job_id
            history = self.noise_history(case.model_name, case.device_profile, case.runtime_config)
            comparison = regression.compare_results(base_result, joined_result(done_c), tol, baseline_job_id=base_id,
                                                    candidate_job_id=",".join(j.id for j in done_c), history=history)
            case.confirmation = comparison.to_dict()
            if comparison.regression:
                case.outcome = "regression"
                case.message = f"confirmed by a re-run: {comparison.summary} (first attempt: {case.message})"
            else:
                case.outcome = "inconclusive" if comparison.inconclusive else "pass"
                case.message = (f"suspected regression not confirmed by a re-run interleaved with the baseline "
                                f"model on the same device ({comparison.summary}); first attempt: {case.message}")


def outcome_of(comparison: regression.Comparison) -> str:
    if comparison.regression:
        return "regression"
    return "inconclusive" if comparison.inconclusive else "pass"


def joined_result(jobs: Sequence[Job]) -> Dict[str, Any]:
    """One result from several runs of the same model (one repeat each, as a confirmation
    makes them): every run's repeats, in order, its samples after the previous run's; single
    readings (memory, power, heat) from the first run; steady only when every run was."""
    first = dict(jobs[0].result or {})
    samples: List[int] = []
    repeats: List[Dict[str, Any]] = []
    reasons: List[str] = []
    steady = True
    for job in jobs:
        result = job.result or {}
        own = result.get("latency", {}).get("samples_ns", [])
        steady = steady and regression.is_steady(result)
        reasons += (result.get("stability") or {}).get("reasons", [])
        runs = result.get("repeats") or [{"first_sample": 0, "count": len(own),
                                          "p50_seconds": result.get("latency", {}).get("p50_seconds"),
                                          "steady": regression.is_steady(result)}]
        for rep in runs:
            repeats.append(dict(rep, index=len(repeats), first_sample=len(samples) + int(rep.get("first_sample", 0))))
        samples += own
    first["latency"] = dict(first.get("latency", {}), samples_ns=samples, repeats=len(repeats))
    first["repeats"] = repeats
    first["stability"] = {"steady": steady, "reasons": reasons}
    return first
