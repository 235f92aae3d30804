"""Running a regression suite on the farm: models x device profiles, judged by budgets and by a
baseline, a suspected regression confirmed by a re-run before it fails anything.

A suite is a ``SuiteSpec`` document (the proto's fields, as wire.message_to_dict writes them).
``hilfarm regress`` sends one with ``StartSuiteRun``; the nightly runner (nightly.py) starts the
suites it was given on their cron schedules. Both go through ``SuiteRunner.start``, so a suite
behaves the same whoever starts it, and every run is recorded (tables in models.py).

A suite run lives in the database, not in a thread: its row says which stage it is in
(``measuring`` its jobs, ``confirming`` suspected regressions, ``done``), which jobs it waits
for and what it has judged so far. ``advance`` takes the next step when the jobs it waits for
have finished, under a short lease on the row (``driver``), so whichever controller replica
holds the lease advances it, two never do at once, and a run survives the restart of the
controller that started it. A step that submits jobs commits them together with the next
stage, so a crash can neither lose nor duplicate them. Each replica's driver thread advances
runs when jobs finish (change notifications) and every few seconds (placement deadlines,
runs whose driver went away).

The judging is in plain functions of the run (``_judge_cases``, ``_submit_confirmation``,
``_conclude_confirmation``, ``_judge_budgets``, ``_finish``); only their order is the state
machine.

Every job of a suite is measured in ``repeats`` fresh processes (5 unless the suite says
otherwise), because the comparison with the baseline takes the repeat as its unit
(regression.py). A first attempt that did not settle latency (a suspected regression, a
change below its noise floor, an unsteady side, an interval that still holds a slowdown) is
confirmed on the device that found it: baseline and candidate are re-run one repeat
at a time, interleaved (A B, B A, ...), pinned to that agent, so that whatever changes on the
device over time touches both alike, and compared pair by pair; rounds of pairs are added
while they cannot tell, up to regression.CONFIRMATION_ROUNDS.

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
import uuid
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import sqlalchemy as sa
from sqlmodel import Session, select

from hilfarm.constraints import FAIL, UNKNOWN, Budget, Verdict, resolve
from hilfarm.contract import is_farm_fault

from . import regression
from .artifacts import ArtifactStore
from .errors import FarmError, InvalidArgument
from .models import (
    DEFAULT_PROJECT, Job, JobEvaluation, JobState, Run, SuiteCaseRow, SuiteRunRow, pin_tag, runtime_config,
)
from .notifications import Change
from .regression_store import LAST_ACCEPTED, RegressionStore
from .scheduler import Scheduler
from .job_repository import JobRepository
from .submission import ModelSpec, plan_run

log = logging.getLogger("hilfarm.controller.suites")

DEFAULT_BASELINE = "main"
DEFAULT_PLACEMENT_TIMEOUT = 300.0
# How long a replica's claim on a suite run lasts without being renewed: after a crash another
# replica resumes the run this much later at the latest.
DRIVER_LEASE_SECONDS = 30.0
# The driver thread also looks at every running suite this often (deadlines, lapsed claims).
SWEEP_SECONDS = 2.0
DEFAULT_REPEATS = 5
# A confirmation round re-runs at least this many interleaved pairs, whatever the suite's
# repeats: enough for one round to clear a suspect, and two rounds give the ten pairs the sign
# test needs to confirm a change; up to regression.CONFIRMATION_ROUNDS rounds run while the
# pairs cannot tell yet.
CONFIRMATION_PAIRS = regression.MIN_PAIRS_TO_CLEAR
OUTCOME_ORDER = ("error", "model_failed", "regression", "budget_broken", "unknown_budget", "inconclusive",
                 "no_baseline", "pass")
NOT_FAILURES = ("pass", "no_baseline", "inconclusive")


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


def evaluation_rows(jobs: Sequence[Job], budgets: Sequence[Budget], constraint_set: str) -> List[JobEvaluation]:
    """The rows that hold each job's budgets, to be stored in the transaction of the jobs."""
    return [JobEvaluation(job_id=job_id, constraint_set=constraint_set, budgets=list(docs))
            for job_id, docs in budgets_by_job(jobs, budgets).items()]


class SlotTaken(FarmError):
    """Another controller replica already started this nightly slot (suite x due time)."""


class DriverLost(Exception):
    """The claim on a suite run lapsed and another replica took it: this step's work is dropped."""


class SuiteRunner:
    """Starts suite runs and advances them (see the module docstring)."""

    def __init__(self, store: JobRepository, regressions: RegressionStore, artifacts: ArtifactStore, scheduler: Scheduler,
                 *, default_max_attempts: int = 3, clock: Callable[[], float] = time.time,
                 driver_lease: float = DRIVER_LEASE_SECONDS, sweep_seconds: float = SWEEP_SECONDS,
                 driver_id: Optional[str] = None) -> None:
        """``driver_id`` names this replica in suite_runs.driver (default: the store's change feed
        origin, unique per process)."""
        self.store = store
        self.db = store.db
        self.reg = regressions
        self.artifacts = artifacts
        self.scheduler = scheduler
        self.default_max_attempts = default_max_attempts
        self.clock = clock
        self.driver_lease = driver_lease
        self.sweep_seconds = sweep_seconds
        self.driver_id = driver_id or store.feed.origin
        self.started: List[str] = []  # ids of the runs this runner started
        self._waited_jobs: set = set()  # jobs the running suite runs wait for (the driver's view)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._unsubscribe: Optional[Callable[[], None]] = None

    # ------------------------------------------------------------ entry points

    def start(self, spec: Dict[str, Any], *, trigger: str = "cli", accept: bool = False,
              nightly_slot: Optional[float] = None, project: str = DEFAULT_PROJECT) -> SuiteRunRow:
        """Check the suite and record the run (in ``project``) with its jobs and their budgets in
        one transaction; a driver advances it from there. ``nightly_slot``: the due time of a
        nightly run, which starts once however many replicas try (SlotTaken for the others)."""
        name = (spec.get("name") or "").strip()
        if not name:
            raise InvalidArgument("a suite needs a name")
        now = self.clock()
        timeout = float(spec.get("placement_timeout_seconds") or DEFAULT_PLACEMENT_TIMEOUT)
        row = SuiteRunRow(id=uuid.uuid4().hex, suite=name, trigger=trigger,
                          baseline=spec.get("baseline") or DEFAULT_BASELINE, spec=spec, accept=accept,
                          started_at=now, stage="measuring", placement_deadline=now + timeout,
                          nightly_slot=nightly_slot, project=project)
        try:
            run, jobs = self._plan(spec, spec.get("models", []), spec.get("device_profiles", []), project=project)
        except Exception as exc:
            row.state, row.stage, row.outcome, row.finished_at = "finished", "done", "error", self.clock()
            row.message = str(exc)
            row.placement_deadline = None
            self._insert_run_row(row)
            raise
        row.job_ids = [j.id for j in jobs]
        try:
            self.store.add_run(run, jobs, also=[row] + self._evaluations(spec, jobs))
        except sa.exc.IntegrityError:
            if nightly_slot is not None:
                raise SlotTaken(f"nightly slot {nightly_slot} of suite {name} was started by another replica") from None
            raise
        self.started.append(row.id)
        self._waited_jobs = self._waited_jobs | set(row.job_ids)
        self._wake.set()
        return row

    def _insert_run_row(self, row: SuiteRunRow) -> None:
        try:
            with self.db.write() as s:
                s.add(row)
        except sa.exc.IntegrityError:
            if row.nightly_slot is not None:
                raise SlotTaken(f"nightly slot {row.nightly_slot} of suite {row.suite} was started by another replica") from None
            raise

    def run_blocking(self, spec: Dict[str, Any], *, trigger: str = "cli", accept: bool = False,
                     timeout: float = 3600.0, project: str = DEFAULT_PROJECT) -> SuiteRunRow:
        run = self.start(spec, trigger=trigger, accept=accept, project=project)
        self.join(timeout, run_ids=[run.id])
        return self.reg.get_suite_run(run.id)[0]

    def join(self, timeout: float = 5.0, *, run_ids: Optional[Sequence[str]] = None) -> bool:
        """Advance the runs this runner started (or ``run_ids``) in this thread until they are
        finished or ``timeout`` passes; True when they finished. Works without a server."""
        wanted = list(run_ids if run_ids is not None else self.started)
        deadline = time.monotonic() + timeout
        unsubscribe = self.store.feed.subscribe(self._on_changes)
        try:
            while True:
                left = [r for r in wanted if self._unfinished(r)]
                if not left:
                    return True
                for run_id in left:
                    self.advance(run_id)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._wake.wait(min(remaining, 0.2))
                self._wake.clear()
        finally:
            unsubscribe()

    def _unfinished(self, run_id: str) -> bool:
        with self.db.read() as s:
            row = s.get(SuiteRunRow, run_id)
            return row is not None and row.state != "finished"

    # ------------------------------------------------------------ the driver thread

    def start_driving(self) -> None:
        """Advance every running suite run of the database in a background thread."""
        self._stop.clear()
        self._unsubscribe = self.store.feed.subscribe(self._on_changes)
        self._thread = threading.Thread(target=self._drive, name="hilfarm-suites", daemon=True)
        self._thread.start()

    def stop_driving(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def _on_changes(self, changes: Sequence[Change], resync: bool) -> None:
        # Only a finished job a running suite waits for is worth a look before the next sweep.
        waited = self._waited_jobs
        if resync or any(c.finished and c.job_id in waited for c in changes):
            self._wake.set()

    def _drive(self) -> None:
        while not self._stop.is_set():
            try:
                waited = set()
                for run_id in self.running_ids():
                    if self._stop.is_set():
                        return
                    self.advance(run_id)
                    waited |= self._waiting_for(run_id)
                self._waited_jobs = waited
            except Exception:  # the driver must outlive a database hiccup
                log.exception("advancing suite runs failed; trying again in %.0f s", self.sweep_seconds)
            self._wake.wait(self.sweep_seconds)
            self._wake.clear()
            self._stop.wait(0.05)  # finishing jobs come in bursts: one pass for a burst

    def _waiting_for(self, run_id: str) -> set:
        """The jobs a running suite run waits for now (none once it finished)."""
        with self.db.read() as s:
            run = s.get(SuiteRunRow, run_id)
        if run is None or run.state == "finished":
            return set()
        if run.stage == "measuring":
            return set(run.job_ids)
        return set((run.work or {}).get("confirm_job_ids", []))

    def running_ids(self) -> List[str]:
        with self.db.read() as s:
            return list(s.exec(select(SuiteRunRow.id).where(SuiteRunRow.state != "finished")
                               .order_by(SuiteRunRow.started_at)).all())

    # ------------------------------------------------------------ the state machine

    def advance(self, run_id: str) -> bool:
        """Take the next step of a running suite run if it can be taken now. False when another
        replica holds the run, or it waits for jobs; True when a step was taken."""
        run = self._claim(run_id)
        if run is None:
            return False
        try:
            return self._step(run)
        except DriverLost:
            log.info("suite run %s (%s) was taken over by another controller", run.id, run.suite)
            return False
        except sa.exc.OperationalError:
            log.warning("suite run %s (%s): the database failed; the next pass tries again", run.id, run.suite,
                        exc_info=True)
            self._release(run)
            return False
        except Exception as exc:
            log.exception("suite run %s (%s) failed", run.id, run.suite)
            run.message = f"the controller failed while running the suite: {type(exc).__name__}: {exc}"
            try:
                self._save(run, outcome="error", cases=[])
            except DriverLost:
                return False
            return True

    def _claim(self, run_id: str) -> Optional[SuiteRunRow]:
        now = self.clock()
        with self.db.write() as s:
            run = s.exec(select(SuiteRunRow).where(
                SuiteRunRow.id == run_id, SuiteRunRow.state != "finished",
                sa.or_(SuiteRunRow.driver.is_(None), SuiteRunRow.driver == self.driver_id,  # type: ignore[union-attr]
                       SuiteRunRow.driver_until < now),
            ).with_for_update(skip_locked=True)).first()
            if run is None:
                return None
            if run.driver not in (None, self.driver_id):
                log.info("suite run %s (%s): taking over from controller %s, which stopped advancing it",
                         run.id, run.suite, run.driver)
            run.driver, run.driver_until = self.driver_id, now + self.driver_lease
            s.add(run)
            return run

    def _check_claim(self, s: Session, run: SuiteRunRow) -> SuiteRunRow:
        """Inside a transaction that saves a step: the run is still ours, locked until commit."""
        current = s.exec(select(SuiteRunRow).where(SuiteRunRow.id == run.id).with_for_update()).first()
        if current is None or current.driver != self.driver_id or current.state == "finished":
            raise DriverLost(run.id)
        return current

    def _release(self, run: SuiteRunRow) -> None:
        with self.db.write() as s:
            s.execute(sa.update(SuiteRunRow.__table__).where(
                SuiteRunRow.__table__.c.id == run.id, SuiteRunRow.__table__.c.driver == self.driver_id)
                .values(driver=None, driver_until=None))

    def _step(self, run: SuiteRunRow) -> bool:
        spec = run.spec
        work: Dict[str, Any] = dict(run.work or {})
        waiting = run.job_ids if run.stage == "measuring" else list(work.get("confirm_job_ids", []))
        jobs = {j.id: j for j in self.store.get_jobs(waiting)}
        stuck: Dict[str, str] = dict(work.get("stuck", {}))
        if not all(jobs[j].job_state.finished for j in waiting if j in jobs):
            if run.placement_deadline is None or self.clock() < run.placement_deadline:
                self._release(run)
                return False
            stuck.update(self._cancel_unplaced(run, [jobs[j] for j in waiting if j in jobs]))
            work["stuck"] = stuck
            self._save_stage(run, run.stage, work, placement_deadline=None)
            return True
        tol = regression.Tolerances.from_dict(spec.get("tolerances"))
        if run.stage == "measuring":
            cases, suspects = self._judge_cases(run, spec, [jobs[j] for j in run.job_ids], stuck, tol)
            if suspects:
                self._submit_confirmation(run, spec, cases, suspects)
                return True
        else:
            cases = [SuiteCaseRow.model_validate(c) for c in work.get("cases", [])]
            confirmations = list(work.get("confirmations", []))
            again = self._conclude_confirmation(cases, confirmations, tol)
            if again:
                self._submit_round(run, spec, cases, confirmations, again)
                return True
        for case in cases:
            self._judge_budgets(case)
        self._finish(run, cases, {j.id: j for j in self.store.get_jobs([c.job_id for c in cases])})
        return True

    def _cancel_unplaced(self, run: SuiteRunRow, jobs: Sequence[Job]) -> Dict[str, str]:
        """Past the placement deadline: cancel what no agent took, with the reason for each.
        Running jobs are bounded by their own limits."""
        timeout = float(run.spec.get("placement_timeout_seconds") or DEFAULT_PLACEMENT_TIMEOUT)
        queued = [j for j in jobs if j.job_state == JobState.QUEUED]
        notes = self.scheduler.placement_notes(queued)
        stuck = {}
        for job in queued:
            why = "; ".join(notes.get(job.id, [])) or "no agent with this profile is registered"
            stuck[job.id] = f"no agent took the job within {timeout:g} s ({why})"
            try:
                self.store.cancel_job(job.id, now=self.clock())
            except FarmError:  # finished meanwhile
                pass
        return stuck

    def _save_stage(self, run: SuiteRunRow, stage: str, work: Dict[str, Any], *,
                    placement_deadline: Optional[float], s: Optional[Session] = None) -> None:
        def save(s: Session) -> None:
            current = self._check_claim(s, run)
            current.stage, current.work, current.placement_deadline = stage, work, placement_deadline
            current.driver = current.driver_until = None
            s.add(current)

        if s is not None:
            save(s)
            return
        with self.db.write() as session:
            save(session)

    # ------------------------------------------------------------ the steps

    def _plan(self, spec: Dict[str, Any], models: Sequence[Dict[str, Any]], profiles: Sequence[str],
              settings: Optional[Dict[str, Any]] = None, extra_tags: Sequence[str] = (), *,
              project: str) -> Tuple[Run, List[Job]]:
        return plan_run(
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

    @staticmethod
    def _evaluations(spec: Dict[str, Any], jobs: Sequence[Job]) -> List[JobEvaluation]:
        return evaluation_rows(jobs, budgets_from_doc(spec.get("constraints", [])), spec.get("constraint_set", ""))

    def _judge_cases(self, run: SuiteRunRow, spec: Dict[str, Any], jobs: Sequence[Job], stuck: Dict[str, str],
                     tol: regression.Tolerances) -> Tuple[List[SuiteCaseRow], List[Tuple[SuiteCaseRow, Job, Job]]]:
        """One case per job of the suite: its outcome from the job's state, its verdicts, and the
        comparison with the baseline. Returns the cases and the suspected regressions to confirm."""
        evaluations = self.reg.evaluations(j.id for j in jobs)
        ref = run.baseline or DEFAULT_BASELINE
        cases: List[SuiteCaseRow] = []
        suspects: List[Tuple[SuiteCaseRow, Job, Job]] = []
        for position, job in enumerate(jobs):
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
                elif failure is not None and not is_farm_fault(failure.category):
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
                if regression.needs_confirmation(comparison, tol) and not spec.get("no_confirm"):
                    suspects.append((case, job, base_job))
                case.outcome = outcome_of(comparison)
                case.message = comparison.summary
        return cases, suspects

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

    def _submit_confirmation(self, run: SuiteRunRow, spec: Dict[str, Any], cases: Sequence[SuiteCaseRow],
                             suspects: Sequence[Tuple[SuiteCaseRow, Job, Job]]) -> None:
        """Re-run each suspect on the agent that found it, one repeat per job, baseline and
        candidate interleaved (A B, B A, ...), to compare the fresh repeats pair by pair; an
        artifact confirmed against itself comes out clean, because both sides then see the same
        device at the same times. This is the first round; ``_conclude_confirmation`` asks for
        more while the pairs cannot tell yet. The jobs, the cases judged so far and the stage
        ``confirming`` commit in one transaction."""
        confirmations: List[Dict[str, Any]] = []
        for case, job, base_job in suspects:
            model = {"sha256": job.model_sha256, "name": job.model_name, "format": job.model_format}
            base_model = {"sha256": base_job.model_sha256, "name": base_job.model_name, "format": base_job.model_format}
            have_baseline_artifact = self.artifacts.stat(base_job.model_sha256, project=run.project) is not None
            confirmations.append({
                "position": case.position, "round": 0, "baseline_job_ids": [], "candidate_job_ids": [],
                "candidate": model, "baseline": base_model if have_baseline_artifact else None,
                "profile": job.device_profile, "settings": dict(job.settings or {}, repeats=1),
                "pinned": [pin_tag(job.agent_id)] if job.agent_id else [],
                "pairs": max(int((job.settings or {}).get("repeats") or DEFAULT_REPEATS), CONFIRMATION_PAIRS),
            })
        self._submit_round(run, spec, cases, confirmations, [c["position"] for c in confirmations])
        log.info("suite run %s (%s): confirming %d suspected regression(s)", run.id, run.suite, len(suspects))

    def _submit_round(self, run: SuiteRunRow, spec: Dict[str, Any], cases: Sequence[SuiteCaseRow],
                      confirmations: List[Dict[str, Any]], positions: Sequence[int]) -> None:
        """One more round of interleaved pairs for the confirmations at ``positions``. The order
        alternates A B, B A, ... so that a device getting steadily faster or slower over the
        round favours neither side; without the baseline's artifact only the candidate re-runs
        (compared with the stored baseline result)."""
        runs: List[Tuple[Run, List[Job]]] = []
        by_position = {c.position: c for c in cases}
        for planned in confirmations:
            if planned["position"] not in positions:
                continue
            planned["round"] += 1
            case = by_position[planned["position"]]
            for pair in range(planned.get("next_pairs") or planned["pairs"]):
                order = ([("candidate", planned["candidate"])] if planned["baseline"] is None
                         else [("baseline", planned["baseline"]), ("candidate", planned["candidate"])])
                if pair % 2:
                    order.reverse()
                for side, model in order:  # one run each, in this order: the pinned agent takes them as queued
                    planned_run = self._plan(spec, [model], [planned["profile"]], settings=planned["settings"],
                                             extra_tags=planned["pinned"], project=run.project)
                    runs.append(planned_run)
                    job_id = planned_run[1][0].id
                    planned[f"{side}_job_ids"].append(job_id)
                    case.confirm_job_ids = list(case.confirm_job_ids or []) + [job_id]
        work = {"cases": [c.model_dump(exclude={"id"}) for c in cases], "confirmations": confirmations,
                "confirm_job_ids": [j.id for _, jobs in runs for j in jobs]}
        timeout = float(spec.get("placement_timeout_seconds") or DEFAULT_PLACEMENT_TIMEOUT)
        deadline = self.clock() + timeout
        evaluations = [e for _, jobs in runs for e in self._evaluations(spec, jobs)]
        self.store.add_runs(runs, also=evaluations,
                            then=lambda s: self._save_stage(run, "confirming", work, placement_deadline=deadline, s=s))

    def _conclude_confirmation(self, cases: Sequence[SuiteCaseRow], confirmations: Sequence[Dict[str, Any]],
                               tol: regression.Tolerances) -> List[int]:
        """Compare the fresh runs of each suspect: only a regression both attempts show fails
        the case. Returns the positions whose pairs cannot tell yet and may have another round."""
        by_position = {c.position: c for c in cases}
        again: List[int] = []
        for planned in confirmations:
            case = by_position[planned["position"]]
            if planned.get("concluded"):  # decided in an earlier round
                continue
            finished = {j.id: j for j in self.store.get_jobs(planned["baseline_job_ids"] + planned["candidate_job_ids"])}
            done_b = [finished[j] for j in planned["baseline_job_ids"] if j in finished]
            done_c = [finished[j] for j in planned["candidate_job_ids"] if j in finished]
            planned["concluded"] = True
            if any(j.job_state != JobState.SUCCEEDED for j in done_b + done_c):
                case.message += ("; the confirmation re-run could not complete, so the regression is reported "
                                 "from the first attempt alone")
                continue
            cand_id = ",".join(j.id for j in done_c)
            if done_b:
                comparison, more = judge_interleaved(done_b, done_c, tol, planned["round"])
                if more:
                    planned["concluded"] = False
                    planned["next_pairs"] = pairs_for_next_round(planned["pairs"], planned["round"],
                                                                 pairs_with_evidence(comparison))
                    again.append(planned["position"])
                    continue
            else:
                history = self.noise_history(case.model_name, case.device_profile, case.runtime_config)
                comparison = regression.compare_results(self.store.get_job(case.baseline_job_id).result or {},
                                                        joined_result(done_c), tol, baseline_job_id=case.baseline_job_id,
                                                        candidate_job_id=cand_id, history=history)
            first = case.message
            case.confirmation = comparison.to_dict()
            rounds = f"{planned['round']} round(s) of interleaved pairs" if done_b else "a re-run"
            if comparison.regression:
                case.outcome = "regression"
                case.message = f"confirmed by {rounds}: {comparison.summary} (first attempt: {first})"
            else:
                case.outcome = "inconclusive" if comparison.inconclusive else "pass"
                case.message = (f"regression not confirmed by {rounds} on the same device "
                                f"({comparison.summary}); first attempt: {first}")
        return again

    def _finish(self, run: SuiteRunRow, cases: Sequence[SuiteCaseRow], jobs: Dict[str, Job]) -> None:
        """The run's outcome; with --accept, its results become the baseline (unless the farm
        could not run every case). Cases, outcome and baselines commit together."""
        outcome = run_outcome(cases)
        accepted: List[Job] = []
        if run.accept and outcome != "error":
            accepted = [jobs[c.job_id] for c in cases if c.job_id in jobs
                        and jobs[c.job_id].job_state == JobState.SUCCEEDED]
            run.accepted = True
        elif run.accept:
            run.message = "the results were not accepted as the baseline: the farm could not run every case"
        self._save(run, outcome=outcome, cases=cases, accepted=accepted)
        log.info("suite run %s (%s): %s", run.id, run.suite, outcome)

    def _save(self, run: SuiteRunRow, *, outcome: str, cases: Sequence[SuiteCaseRow],
              accepted: Sequence[Job] = ()) -> None:
        ref = run.baseline or DEFAULT_BASELINE
        name = DEFAULT_BASELINE if ref == LAST_ACCEPTED else ref
        now = self.clock()
        with self.db.write() as s:
            current = self._check_claim(s, run)
            current.state, current.stage, current.outcome, current.finished_at = "finished", "done", outcome, now
            current.message, current.accepted = run.message, run.accepted
            current.work, current.placement_deadline = None, None
            current.driver = current.driver_until = None
            s.add(current)
            for case in cases:
                case.id = None
                s.add(case)
            for row in self.reg.baseline_rows(name, accepted, suite=run.suite, now=now, project=run.project):
                s.add(row)
        run.state, run.stage, run.outcome, run.finished_at = "finished", "done", outcome, now


def outcome_of(comparison: regression.Comparison) -> str:
    if comparison.regression:
        return "regression"
    return "inconclusive" if comparison.inconclusive else "pass"


def judge_interleaved(baseline_jobs: Sequence[Job], candidate_jobs: Sequence[Job], tol: regression.Tolerances,
                      rounds_done: int) -> Tuple[regression.Comparison, bool]:
    """A confirmation's interleaved runs so far, in the order they were paired: the comparison,
    and whether another round of pairs is worth running (the pairs cannot tell yet and the
    rounds are not used up)."""
    comparison = regression.compare_interleaved(joined_result(baseline_jobs), joined_result(candidate_jobs), tol,
                                                baseline_job_id=",".join(j.id for j in baseline_jobs),
                                                candidate_job_id=",".join(j.id for j in candidate_jobs))
    return comparison, comparison.inconclusive and rounds_done < regression.CONFIRMATION_ROUNDS


def pairs_with_evidence(comparison: regression.Comparison) -> int:
    """How many of a confirmation's interleaved pairs its latency test used (both sides steady)."""
    return next((m.baseline_count for m in comparison.metrics if m.metric == "latency.median"), 0)


def pairs_for_next_round(per_round: int, rounds_done: int, with_evidence: int) -> int:
    """The size of a confirmation's next round: it makes up for the pairs left out so far (a
    side that was not steady is no evidence), so that after it the pairs with evidence number
    what ``rounds_done + 1`` rounds of steady pairs would give; never fewer than a round, at
    most two, so a device that is never steady still ends in time. The number of looks, and so
    each look's alpha, is unchanged; and whether a repeat was steady is judged within its own
    process, never from the change between the sides, so sizing a round by it cannot lean
    towards a verdict. On a busy device half a confirmation's pairs were left out, and four
    rounds of the rest still could not tell a 5 % slowdown."""
    return max(per_round, min(2 * per_round, (rounds_done + 1) * per_round - with_evidence))


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
                                          "min_seconds": result.get("latency", {}).get("min_seconds"),
                                          "steady": regression.is_steady(result)}]
        for rep in runs:
            repeats.append(dict(rep, index=len(repeats), first_sample=len(samples) + int(rep.get("first_sample", 0))))
        samples += own
    first["latency"] = dict(first.get("latency", {}), samples_ns=samples, repeats=len(repeats))
    first["repeats"] = repeats
    first["stability"] = {"steady": steady, "reasons": reasons}
    return first
