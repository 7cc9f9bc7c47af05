"""Step parsing: SPORT's format, the near-misses it tolerates (noted), and precise reasons for the rest."""
import pytest

from sport_fast.agent.actions import MalformedStep, parse_step

GOOD = "Thought: count them.\n```py\nprint(count_objects('a.png'))\n```<end_action>"


def test_the_canonical_step():
    step = parse_step(GOOD)
    assert (step.thought, step.code, step.repairs) == ("count them.", "print(count_objects('a.png'))", [])


@pytest.mark.parametrize("text, code, repair", [
    ("Thoughts: x\n```python\na = 1\n```<end_action>", "a = 1", "'Thoughts:' for 'Thought:'"),
    ("thought: x\n```\na = 1\n```<end_action>", "a = 1", "'thought:' for 'Thought:'"),
    ("Thought: x\nCode:\n```py\na = 1\n```<end_action>", "a = 1", None),
    ("Thought: x\n```py\na = 1\n<end_action>", "a = 1", "missing closing ```"),
    ("Thought: x\n```py\na = 1\n```", "a = 1", "no <end_action>"),
    ("Thought: x\n```py\na = 1\n```<end_action>\nObservation: made up", "a = 1", None),
    ("I will look.\n```py\na = 1\n```<end_action>", "a = 1", "no 'Thought:'"),
])
def test_near_misses_are_repaired_and_noted(text, code, repair):
    step = parse_step(text)
    assert step.code == code and step.thought in ("x", "I will look.")
    assert (repair in step.repairs) if repair else step.repairs == []


@pytest.mark.parametrize("text, reason", [
    ("Thought: I am done.<end_action>", "no fenced Python code block"),
    ("Thought: x\n```py\na = 1\n```\n```py\nb = 2\n```<end_action>", "2 code blocks"),
    ("Thought: x\n```py\n\n```<end_action>", "the code block is empty"),
    ("Thought: x\n```py\nprint((1)\n```<end_action>", "does not compile: SyntaxError"),
])
def test_malformed_steps_say_precisely_why(text, reason):
    with pytest.raises(MalformedStep, match=reason):
        parse_step(text)
