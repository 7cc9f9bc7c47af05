"""Character-level sentence BLEU, SPORT's similarity between a rejected candidate and the chosen one.

BLEU-4 over characters: geometric mean of the modified n-gram precisions p_1..p_4 (uniform weights), times
the brevity penalty min(1, exp(1 - r/c)) for reference length r and candidate length c. A precision with
no match would zero the score, so zero numerators get epsilon = 0.1 (Chen & Cherry's method 1, as
NLTK's ``SmoothingFunction().method1``); an order longer than the candidate counts as epsilon / 1.
"""
from __future__ import annotations

import math
from collections import Counter

EPSILON = 0.1


def char_bleu(candidate: str, reference: str, max_order: int = 4) -> float:
    """BLEU of ``candidate`` against ``reference``, both as character sequences; in [0, 1]."""
    if not candidate or not reference or not set(candidate) & set(reference):
        return 0.0  # no character in common: no smoothing makes them similar
    log_p = sum(math.log(_precision(candidate, reference, n)) for n in range(1, max_order + 1)) / max_order
    c, r = len(candidate), len(reference)
    brevity = 1.0 if c > r else math.exp(1 - r / c)
    return brevity * math.exp(log_p)


def _precision(candidate: str, reference: str, n: int) -> float:
    cand, ref = _ngrams(candidate, n), _ngrams(reference, n)
    matched = sum(min(count, ref[g]) for g, count in cand.items())
    total = max(1, sum(cand.values()))
    return (matched if matched else EPSILON) / total


def _ngrams(text: str, n: int) -> Counter:
    return Counter(text[i:i + n] for i in range(len(text) - n + 1))
