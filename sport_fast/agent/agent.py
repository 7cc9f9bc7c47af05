"""The agent: at each step, K candidate steps from the policy, each parsed and executed in the sandbox on the
state of the chosen steps so far, one chosen, its observation fed back as the next turn.

Per step:
1. the policy samples K candidates (SPORT: candidate 0 at temperature 0.7, the rest at 1.2), stopping at
   ``<end_action>``; token ids are kept verbatim for training;
2. each candidate is parsed (a malformed one is recorded with the reason, never executed) and run in a
   fresh sandbox after replaying the chosen steps' code, in parallel;
   with ``resample`` = R, a step none of whose candidates ran is drawn again (K more candidates at the same
   cached context, their own seeds), up to R times or until one runs: SPORT's rule yields no pair from a step
   where nothing ran, and a step that runs on the second draw does (the candidates of every draw stay in
   the step's record, so the failed ones are its rejected candidates);
3. ``select`` picks one (a judge, in training; by default the first candidate whose code ran) or abstains;
   on an abstention the step is labelled with nothing (``chosen=None``: it yields no pair) and, with
   ``on_abstain="follow_first_ran"``, the trajectory goes on with the first candidate that ran, so later
   steps can still be judged; with ``"stop"`` it ends there;
4. the followed step's observation becomes the next user turn, prefilled on top of the cached context.
``run_many`` runs several tasks in lockstep so that their candidates decode in one batch; each trajectory's
candidates run and are judged as soon as they are sampled, in step workers; ``run_batches`` keeps several
such batches in flight (``pipeline.py``) so that the model decodes one while the others wait on the
sandbox and the judge.
Stops at ``final_answer``, after ``max_steps``, after ``max_errors`` followed steps that failed, or on an
abstention with ``on_abstain="stop"``. Everything is recorded: the trajectory is the raw material of step
groups (``labels.py``).
"""
from __future__ import annotations

import zlib
from collections.abc import Iterator
from concurrent.futures import as_completed
from dataclasses import dataclass, field

from sport_fast.agent.actions import END_ACTION, MalformedStep, parse_step
from sport_fast.agent.pipeline import StepPools, in_flight
from sport_fast.agent.prompt import system_prompt, user_turn
from sport_fast.agent.records import CandidateRecord, Selector, StepRecord, TrajectoryRecord
from sport_fast.sampler.sampling import Candidate, SamplingParams


@dataclass
class AgentConfig:
    """How the agent acts; the one home of these fields (the config's ``explore`` and ``eval`` sections are
    this plus their own)."""
    k: int = 1                             # candidates per step
    max_steps: int = 6                     # steps before a trajectory stops unfinished
    max_errors: int = 3                    # followed steps that failed before the trajectory stops
    max_new_tokens: int = 256              # per candidate step
    first_temperature: float = 0.7         # candidate 0 (SPORT: 0.7)
    other_temperature: float = 1.2         # candidates 1.. (SPORT: 1.2)
    top_p: float = 1.0                     # nucleus sampling (1: off)
    on_abstain: str = "follow_first_ran"   # judge abstained: go on with the first that ran, or "stop"
    resample: int = 0                      # draws of K more candidates for a step none of whose candidates ran

    def __post_init__(self) -> None:
        if self.resample < 0:
            raise ValueError(f"resample must be >= 0 (extra draws for a step where nothing ran), got {self.resample}")
        if min(self.k, self.max_steps, self.max_errors, self.max_new_tokens) < 1:
            raise ValueError(f"k, max_steps, max_errors and max_new_tokens must be >= 1, got {self.k}, "
                             f"{self.max_steps}, {self.max_errors}, {self.max_new_tokens}")
        if self.on_abstain not in ("follow_first_ran", "stop"):
            raise ValueError(f"on_abstain must be 'follow_first_ran' or 'stop', got {self.on_abstain!r}")
        if self.first_temperature < 0 or self.other_temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError("temperatures must be >= 0 and top_p in (0, 1]")


def lockstep_batches(tasks, batch: int) -> list[list]:
    """Fixed slices of ``batch`` tasks, in order: a batch's membership never depends on which tasks are left,
    so a batch re-run after a crash, or run by another rank, decodes exactly as it would have."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    tasks = list(tasks)
    return [tasks[i:i + batch] for i in range(0, len(tasks), batch)]


def first_that_ran(task, step: int, candidates: list[CandidateRecord], history=()) -> int:
    """Test-time rule without a judge: the first candidate whose code ran, else candidate 0."""
    return next((i for i, c in enumerate(candidates) if c.ran), 0)


class Agent:
    def __init__(self, policy, chat, sandbox, tools, config: AgentConfig | None = None,
                 select: Selector = first_that_ran, selection_name: str | None = None, vision=None, seed: int = 0,
                 workers: int = 4, in_flight: int = 1, tool_style: str = "compact"):
        """``vision``: a ``VisionPrompt`` to show a vision-language policy the task's images; ``seed``: with the
        task, step and candidate, each candidate's sampling seed; ``workers``: sandbox runs at a time;
        ``in_flight``: lockstep batches run at once by ``run_batches`` (``agent.pipeline``); ``tool_style``: how
        the prompt lists the tools."""
        self.policy, self.chat, self.sandbox, self.tools, self.vision = policy, chat, sandbox, tools, vision
        self.config, self.seed, self.workers, self.in_flight = config or AgentConfig(), seed, workers, in_flight
        self.select = select
        self.selection_name = selection_name or getattr(select, "__name__", "custom")
        self.system = system_prompt(tools, tool_style)

    def run(self, task) -> TrajectoryRecord:
        return self.run_many([task])[0]

    def run_batches(self, chunks) -> Iterator[tuple[list, list, float]]:
        """(chunk, its trajectories, wall seconds per task) for each chunk of tasks (``lockstep_batches``), in
        order; each chunk runs in lockstep, up to ``in_flight`` chunks at once, their sandbox runs sharing
        one pool of ``workers``. The trajectories equal those of running the chunks one after another."""
        chunks = [list(c) for c in chunks]
        if not chunks:
            return
        depth = min(self.in_flight, len(chunks))
        with StepPools(self.workers, depth * max(len(c) for c in chunks)) as pools:
            yield from in_flight(chunks, lambda chunk: self._lockstep(chunk, pools), depth)

    def run_many(self, tasks) -> list[TrajectoryRecord]:
        """The trajectories of ``tasks``, in lockstep: at each step every unfinished trajectory's K candidates
        are sampled together (one decode batch with ``sample_many``), then each trajectory's candidates run
        in the sandbox and are judged as soon as they have run, and it is continued. Each trajectory's data
        equals what ``run`` gives it alone, up to the floating-point rounding of a different batch shape."""
        with StepPools(self.workers, len(tasks)) as pools:
            return self._lockstep(list(tasks), pools)

    def _lockstep(self, tasks: list, pools: StepPools) -> list[TrajectoryRecord]:
        episodes = [self._begin(task) for task in tasks]
        for step in range(self.config.max_steps):
            active = [e for e in episodes if e.record.stop_reason == ""]
            if not active:
                break
            self._step(active, step, pools)
        for e in episodes:
            e.record.stop_reason = e.record.stop_reason or f"max_steps ({self.config.max_steps})"
        return [e.record for e in episodes]

    def _step(self, active: list["_Episode"], step: int, pools: StepPools) -> None:
        """Step ``step`` of every trajectory in ``active``: K candidates each, sampled in one decode batch, run and
        judged per trajectory as soon as they are sampled; the steps where nothing ran are drawn again together
        (``resample``) until one runs or the draws are spent, and every trajectory is advanced."""
        drawn: dict[int, list[CandidateRecord]] = {id(e): [] for e in active}  # earlier draws' candidates
        for draw in range(1 + self.config.resample):
            last = draw == self.config.resample
            sampled = self._sample([(e.handle, self._params(e.task, step, draw)) for e in active])
            settling = {pools.steps.submit(self._settle, e, step, drawn[id(e)], [_parsed(c) for c in cands],
                                           pools, last): e for e, cands in zip(active, sampled)}
            again = set()
            for done in as_completed(settling):  # each trajectory's own data: the order is immaterial
                e, (candidates, selection) = settling[done], done.result()
                if selection is _DRAW_AGAIN:
                    drawn[id(e)] = candidates
                    again.add(id(e))
                else:
                    self._advance(e, step, candidates, selection, draw)
            active = [e for e in active if id(e) in again]  # in order: the next draw decodes the same rows
            if not active:
                return

    def _begin(self, task) -> "_Episode":
        shown = self.vision.images(task) if self.vision is not None else []
        context = self.chat.prompt_ids(self.system, user_turn(task, self.vision, shown))
        record = TrajectoryRecord(task_id=task.id, context_ids=context, selection=self.selection_name,
                                  images=[str(im.path) for im in shown])
        if shown:
            handle = self.policy.start(context, images=[(im.pixel_values, im.grid_thw) for im in shown])
        else:
            handle = self.policy.start(context)
        return _Episode(task, record, handle)

    def _sample(self, requests: list) -> list[list[Candidate]]:
        if hasattr(self.policy, "sample_many"):
            return self.policy.sample_many(requests)
        return [self.policy.sample(handle, params) for handle, params in requests]

    def _settle(self, e: "_Episode", step: int, earlier: list[CandidateRecord], new: list[CandidateRecord],
                pools: StepPools, last: bool = True):
        """(candidates, the selection) of one trajectory's step: every parsed new candidate run in a fresh
        sandbox (the shared pool), then all of the step's candidates judged, or ``_DRAW_AGAIN`` when none of
        them ran and this was not the last draw; runs in a step worker, so other trajectories go on meanwhile."""
        jobs = [pools.sandbox.submit(self._execute, rec, e.task, e.chosen_code, e.chosen_errors)
                for rec in new if rec.parse_error is None]
        for job in jobs:
            job.result()
        candidates = earlier + new
        if not last and not any(c.ran for c in candidates):
            return candidates, _DRAW_AGAIN
        return candidates, self.select(e.task, step, candidates, e.record.followed_steps())

    def _advance(self, e: "_Episode", step: int, candidates: list[CandidateRecord], selection, draw: int = 0) -> None:
        """Record the selection, and either stop the trajectory (setting its stop reason) or continue it.
        ``draw``: the last draw of the step (0: the step was drawn once); only its candidates are still held
        by the policy. Every earlier draw's candidates failed, so a selection among them means that nothing
        ran at all (``first_that_ran``'s candidate 0; a judge only picks among those that ran): it becomes the
        last draw's first candidate, which failed alike."""
        record = e.record
        chosen, verdict = _selection(selection)
        held = len(candidates) - self.config.k  # index of the last draw's first candidate
        if chosen is not None and chosen < held:
            chosen = held
        follow = chosen if chosen is not None or self.config.on_abstain == "stop" else \
            first_that_ran(e.task, step, candidates)
        if follow is not None and follow < held:
            follow = held
        rec = StepRecord(context_tokens=_context_len(e.handle, e.record.context_ids), candidates=candidates, chosen=chosen,
                         followed=follow, verdict=verdict, draws=draw + 1)
        record.steps.append(rec)
        if follow is None:
            record.stop_reason = "selector abstained"
            return
        best = candidates[follow]
        if best.has_final_answer:
            record.final_answer, record.finished, record.stop_reason = best.final_answer, True, "final_answer"
            return
        e.errors += not best.ran
        if e.errors >= self.config.max_errors:
            record.stop_reason = f"{e.errors} failed steps"
            return
        rec.observation_ids = self.chat.observation_ids(best.text, best.observation)
        self.policy.commit(e.handle, follow - held, rec.observation_ids)
        if best.parse_error is None:
            e.chosen_code.append(best.code)
            e.chosen_errors.append(best.error)

    def _execute(self, rec: CandidateRecord, task, chosen_code: list[str], chosen_errors: list) -> None:
        result = self.sandbox.run(rec.code, files=task.files, prelude=chosen_code)
        rec.observation, rec.error, rec.timed_out = result.observation(), result.error, result.timed_out
        rec.tool_calls, rec.wall_s = result.tool_calls, result.wall_s
        rec.has_final_answer, rec.final_answer = result.has_final_answer, result.final_answer
        rec.replay_error = replay_mismatch(result.prelude_errors, chosen_errors)
        if rec.replay_error is not None:
            rec.observation = f"Error: {rec.replay_error}\n{rec.observation}"

    def _params(self, task, step: int, draw: int = 0) -> list[SamplingParams]:
        """The K candidates' sampling of a step's ``draw``; their seeds number the step's candidates on from
        the earlier draws', so a redrawn step samples new candidates (the first draw's are as without it)."""
        c = self.config
        return [SamplingParams(temperature=c.first_temperature if i == 0 else c.other_temperature, top_p=c.top_p,
                               max_new_tokens=c.max_new_tokens, stop=(END_ACTION,),
                               stop_token_ids=self.chat.turn_end_ids,  # as engines (and our server) stop at EOS
                               seed=zlib.crc32(f"{self.seed}:{task.id}:{step}:{draw * c.k + i}".encode()))
                for i in range(c.k)]


_DRAW_AGAIN = object()  # _settle's selection for a step to be drawn again


@dataclass
class _Episode:
    """One task's trajectory in progress: its record, the policy's handle, the code of the followed steps."""
    task: object
    record: TrajectoryRecord
    handle: object
    chosen_code: list[str] = field(default_factory=list)
    chosen_errors: list = field(default_factory=list)   # what each followed step raised (None: it ran)
    errors: int = 0


def replay_mismatch(prelude_errors: list[dict], expected: list) -> str | None:
    """Why the replay of the chosen steps left another state than the trajectory's (a step that raised
    now and not then, or the other way round, or raised something else), or None."""
    got = {e["step"]: e["error"] for e in prelude_errors}
    for step, want in enumerate(expected):
        if got.get(step) != want:
            now = got.get(step) or "ran"
            return (f"replaying earlier step {step + 1} went differently in this run ({now}; it had "
                    f"{'raised ' + want.splitlines()[-1] if want else 'run'}), so this step ran on another state")
    return None


def _selection(value) -> tuple[int | None, dict | None]:
    if value is None or isinstance(value, int):
        return value, None
    return value.chosen, value.to_json()


def _parsed(c: Candidate) -> CandidateRecord:
    rec = CandidateRecord(text=c.text or "", token_ids=list(c.token_ids), logprobs=list(c.logprobs),
                          finish_reason=c.finish_reason, weight_version=c.weight_version)
    try:
        step = parse_step(rec.text)
        rec.thought, rec.code, rec.repairs = step.thought, step.code, step.repairs
    except MalformedStep as err:
        rec.parse_error = str(err)
        rec.observation = f"Error: the step is malformed: {err}"
    return rec


def _context_len(handle, initial: list[int]) -> int:
    return len(getattr(handle, "context_ids", initial))
