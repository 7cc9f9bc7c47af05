"""GAIA's and GTA's answer rules, on the cases their published scorers distinguish."""
import pytest

from sport_fast.tasks.answer_rules import gaia_correct, gta_correct


@pytest.mark.parametrize("pred, truth, want", [
    ("42", "42", True), ("$1,234.00", "1234", True), ("17%", "17", True), ("42.5", "42", False),
    ("forty-two", "42", False), (42, "42", True), (None, "42", False),
    ("Paris", "paris", True), ("  Saint-Petersburg ", "Saint Petersburg", True), ("Paris, France", "Paris", False),
    ("Gadget, 2533", "Gadget, 2533", True), ("gadget;2,533", "Gadget, 2533", False), ("Gadget, 2533.0", "Gadget, 2533", True),
    ("Gadget", "Gadget, 2533", False), ("2533, Gadget", "Gadget, 2533", False),
])
def test_gaia_rule(pred, truth, want):
    assert gaia_correct(pred, truth) is want


@pytest.mark.parametrize("pred, white, black, want", [
    ("The total is 12 dollars", [["12", "twelve"]], None, True),
    ("The total is twelve", [["12", "twelve"]], None, True),
    ("The total is 112", [["12"]], None, False),                 # whole words only
    ("red and 3", [["red"], ["3", "three"]], None, True),
    ("red only", [["red"], ["3", "three"]], None, False),
    ("3 red, not 4", [["3"]], [["4"]], False),
    ("3 RED", [["red"]], [], True),
])
def test_gta_rule(pred, white, black, want):
    assert gta_correct(pred, white, black) is want
