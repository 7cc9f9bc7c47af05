"""The prompt's tool list, from signatures and docstrings only: both renderings, SPORT's block layout parsed
back, every tool of every set documented, and the compact list within the small model's budget."""
import ast
import re

import pytest

from sport_fast.tools import Tool, ToolRegistry, default_registry, tool_set
from sport_fast.tools.describe import tool_doc

SPORT_BLOCK = re.compile(r"^- (\w+): (.+)\n    Takes inputs: (\{.*\})\n    Returns an output of type: (\w+)$", re.M)


def paint(image: str, size: int = 3, color: str | None = None, ratio: float = 0.5, exact: bool = True,
          box: list | str | None = None) -> str:
    """paint an image

    Args:
        image: the image file
        size: brush size in pixels, which can be
            written over two lines
        color: a colour name
        ratio: how much paint
        exact: whether to be exact
        box: where

    Notes for developers: never rendered.
    """


def fake_host(*args, workdir, **kwargs):
    return "ok"


def all_backends() -> dict:
    detector = fake_host
    return {"vqa": fake_host, "captioner": fake_host, "detector": detector, "segmenter": fake_host,
            "web_search": fake_host, "image_generator": fake_host, "image_editor": fake_host}


def every_set() -> list[ToolRegistry]:
    backends = all_backends()
    sport = {k: v for k, v in backends.items() if k != "captioner"} | {"face_detector": fake_host}
    return [default_registry(vqa=fake_host, web_search=fake_host), tool_set("offline"), tool_set("gta", **backends),
            tool_set("sport", **sport)]


def test_compact_line_is_signature_and_summary():
    assert Tool("paint", paint).render() == (
        "- paint(image: str, size: int = 3, color: str | None = None, ratio: float = 0.5, exact: bool = True, "
        "box: list | str | None = None) -> str: paint an image")


def test_sport_block_carries_types_descriptions_and_defaults():
    block = Tool("paint", paint).render("sport")
    name, description, inputs, output = SPORT_BLOCK.match(block).groups()
    inputs = ast.literal_eval(inputs)
    assert (name, description, output) == ("paint", "Paint an image.", "string")
    assert {k: v["type"] for k, v in inputs.items()} == {"image": "string", "size": "integer", "color": "string",
                                                         "ratio": "number", "exact": "boolean", "box": "any"}
    assert inputs["size"]["description"] == "[Optional, default 3]: brush size in pixels, which can be written over two lines"
    assert inputs["color"]["description"] == "[Optional]: a colour name" and inputs["image"]["description"] == "the image file"
    assert "developers" not in block


def test_a_docstring_naming_a_missing_argument_is_refused():
    def bad(x):
        """do it

        Args:
            y: not an argument of bad
        """
    with pytest.raises(ValueError, match=r"no such argument \['y'\]"):
        tool_doc(bad)


@pytest.mark.parametrize("registry", every_set(), ids=lambda r: r.name)
def test_every_tool_of_every_set_is_documented_in_both_styles(registry):
    for style in ("compact", "sport"):
        text = registry.render(style)
        assert text.count("\n- ") + 1 == len(registry.names) + 1, "one entry per tool, then final_answer"
        assert text.rstrip().splitlines()[-1 if style == "compact" else -3].startswith("- final_answer")
    blocks = SPORT_BLOCK.findall(registry.render("sport"))
    assert [b[0] for b in blocks] == registry.names + ["final_answer"]
    for name, description, inputs, _ in blocks:
        assert len(description) > 10, f"{name} has no description"
        for arg, spec in ast.literal_eval(inputs).items():
            assert re.sub(r"^\[Optional[^]]*\](: )?", "", spec["description"]), f"{name}({arg}) is undocumented"


def test_host_tools_are_described_by_their_interface_not_their_backend():
    text = tool_set("gta", vqa=fake_host, detector=fake_host).render()
    assert "- detect_objects(image: str, text: str, top1: bool = False) -> list: find objects" in text
    assert "- describe_region(image: str, box: list | str, attribute: str) -> str" in text


def test_an_unknown_style_is_refused():
    with pytest.raises(ValueError, match="compact, sport"):
        tool_set("offline").render("json")


def test_the_offline_prompt_stays_small():
    """The default 135M model works in ~2k tokens; the compact offline list is about 565 SmolLM2 tokens."""
    text = tool_set("offline").render()
    assert len(text) < 2800, f"the offline tool list grew to {len(text)} characters"
    assert len(tool_set("offline").render("sport")) > 2 * len(text)
