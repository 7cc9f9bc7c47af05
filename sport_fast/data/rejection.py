"""From judged trajectories to step groups: SPORT's rule for which candidates are rejected.

For a step whose judge picked candidate c, the rejected candidates are (``rule``):
- ``"sport"`` (SPORT's): every candidate that failed (malformed, raised, timed out), and every one that ran
  but whose character-level BLEU to c is below ``bleu_threshold`` (0.3): a candidate close to the pick is
  not treated as worse than it;
- ``"all"``: every other candidate;
- ``"worst"``: the single worst other one: a failed one if any, else the least similar (lowest BLEU).
A candidate token-identical to the pick is never rejected (the pair would teach nothing). Steps where the
judge abstained, or where nothing is rejected, yield no group: the labels are never invented.
"""
from __future__ import annotations

from sport_fast.data.bleu import char_bleu
from sport_fast.data.step_group import StepGroup

RULES = ("sport", "all", "worst")


def rejected_candidates(candidates: list, chosen: int, rule: str = "sport", bleu_threshold: float = 0.3) -> list[int]:
    if rule not in RULES:
        raise ValueError(f"rejection rule must be one of {RULES}, got {rule!r}")
    pick = candidates[chosen]
    others = [i for i, c in enumerate(candidates) if i != chosen and c.token_ids != pick.token_ids]
    similarity = {i: char_bleu(candidates[i].text, pick.text) for i in others}
    if rule == "all":
        return others
    if rule == "worst":
        return [min(others, key=lambda i: (candidates[i].ran, similarity[i]))] if others else []
    return [i for i in others if not candidates[i].ran or similarity[i] < bleu_threshold]


def step_groups(traj, rule: str = "sport", bleu_threshold: float = 0.3, meta: dict | None = None,
                images: list[str] = ()) -> list[StepGroup]:
    """One group per judged step of ``traj`` (a ``TrajectoryRecord``), contexts rebuilt from its token ids;
    ``images``: the content hashes (in a StepStore) of the images its context shows, in order."""
    groups, context = [], list(traj.context_ids)
    for n, step in enumerate(traj.steps):
        if step.chosen is not None:
            rejected = rejected_candidates(step.candidates, step.chosen, rule, bleu_threshold)
            if rejected:
                groups.append(_group(traj, n, step, context, rejected, meta or {}, list(images)))
        if step.followed is None:
            break
        context = context + step.candidates[step.followed].token_ids + list(step.observation_ids)
    return groups


def _group(traj, n: int, step, context: list[int], rejected: list[int], meta: dict, images: list[str]) -> StepGroup:
    cands = step.candidates
    versions = {getattr(c, "weight_version", None) for c in cands}
    if len(versions) > 1:
        raise ValueError(f"task {traj.task_id} step {n}: candidates of weight versions {sorted(versions, key=str)} "
                         f"in one step (they are sampled together)")
    return StepGroup(context_ids=list(context), candidate_ids=[c.token_ids for c in cands], chosen=step.chosen,
                     rejected=rejected, images=images, candidate_texts=[c.text for c in cands],
                     results=[{"ran": c.ran, "observation": c.observation[:2000], "error": c.error} for c in cands],
                     verdict=step.verdict, meta={**meta, "task_id": traj.task_id, "step": n},
                     weight_version=versions.pop())
