"""Character BLEU against NLTK's sentence BLEU (method-1 smoothing) on random strings, and fixed points."""
import random
import warnings

import pytest

from sport_fast.data.bleu import char_bleu


def test_matches_nltk_on_random_strings():
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    smooth, rng = SmoothingFunction().method1, random.Random(0)
    for _ in range(2000):
        a = "".join(rng.choice("abcde ()'x=") for _ in range(rng.randint(1, 40)))
        b = "".join(rng.choice("abcde ()'x=") for _ in range(rng.randint(1, 40)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = sentence_bleu([list(b)], list(a), smoothing_function=smooth)
        assert char_bleu(a, b) == pytest.approx(want, abs=1e-12), (a, b)


def test_fixed_points():
    code = "print(count_objects('shapes.png', color='red'))"
    assert char_bleu(code, code) == pytest.approx(1.0)
    assert char_bleu("", code) == 0.0 and char_bleu("xyz", "abc") == 0.0
    assert char_bleu(code.replace("red", "blue"), code) > 0.8 > char_bleu("final_answer(7)", code)
