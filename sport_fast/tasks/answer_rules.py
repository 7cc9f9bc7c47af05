"""Answer scoring rules of the two benchmarks whose style our evaluation follows.

GAIA: a ground truth that parses as a number is compared as a float after removing ``$``, ``%`` and
commas from the prediction; one containing ``,`` or ``;`` is a list, compared element by element (same
length, numbers as numbers, strings normalised); anything else is a string compared after removing all
white space and punctuation and lower-casing.
GTA: every whitelist group needs one of its aliases in the prediction as a whole word (case-insensitive),
and no blacklist alias may appear.
"""
from __future__ import annotations

import re
import string


def task_answer_correct(task, answer) -> bool:
    """``answer`` scored by ``task``'s own rule: GTA's when it has a whitelist, else GAIA's against its answer."""
    if task.whitelist is not None:
        return gta_correct(answer, task.whitelist, task.blacklist)
    return task.answer is not None and gaia_correct(answer, task.answer)


def gaia_correct(prediction, truth: str) -> bool:
    pred = "" if prediction is None else str(prediction)
    if _is_number(truth):
        return _as_number(pred) == float(truth)
    if any(sep in truth for sep in ",;"):
        want, got = _split(truth), _split(pred)
        return len(want) == len(got) and all(_element_equal(g, w) for g, w in zip(got, want))
    return _normalise(pred) == _normalise(truth)


def gta_correct(prediction, whitelist: list[list[str]], blacklist: list[list[str]] | None = None) -> bool:
    pred = "" if prediction is None else str(prediction)
    for aliases in whitelist:
        if not re.search(_words(aliases), pred, re.IGNORECASE):
            return False
    banned = [alias for group in (blacklist or []) for alias in group]
    return not (banned and re.search(_words(banned), pred, re.IGNORECASE))


def _words(aliases: list[str]) -> str:
    return r"\b(?:" + "|".join(re.escape(a) for a in aliases) + r")\b"


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _as_number(text: str) -> float | None:
    cleaned = text.replace("$", "").replace("%", "").replace(",", "").strip()
    try:
        return float(cleaned)
    except ValueError:
        return None


def _split(text: str) -> list[str]:
    return [part.strip() for part in re.split(r"[,;]", text)]


def _element_equal(got: str, want: str) -> bool:
    if _is_number(want):
        return _as_number(got) == float(want)
    return _normalise(got, keep_punctuation=True) == _normalise(want, keep_punctuation=True)


def _normalise(text: str, keep_punctuation: bool = False) -> str:
    text = re.sub(r"\s", "", text).lower()
    return text if keep_punctuation else text.translate(str.maketrans("", "", string.punctuation))
