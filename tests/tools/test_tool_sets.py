"""Named tool sets: what each holds for a configuration, the benchmark-name mappings evaluation counts with,
refusals, and the tools running where they must (new offline tools in the sandbox child, SPORT's names and
GTA's composites in the parent over the pipe, their arguments renamed and their results reshaped)."""
import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from sport_fast.sandbox.layers import REQUIRED_LAYERS, available_layers
from sport_fast.sandbox.sandbox import Sandbox
from sport_fast.tools import default_registry, tool_set
from sport_fast.tools.backends import backends_from_config
from sport_fast.tools.model_backed import OpenAIVisionQA, resolve_inside
from sport_fast.tools.tool_sets import BACKENDS, GTA_TOOLS, SPORT_TOOLS, describe_set
from sport_fast.tools.vqa_tools import VQADescription

WEAK = not all(available_layers()[k] for k in REQUIRED_LAYERS)
OFFLINE = ["image_size", "crop", "color_stats", "count_objects", "ocr", "calculator", "read_file", "draw_box",
           "add_text", "plot", "solver", "math_ocr"]


class Recorder:
    """A host backend that records its keyword arguments (and the image it was shown) and replies ``reply``."""

    def __init__(self, reply, open_vocabulary=False):
        self.reply, self.calls, self.images, self.open_vocabulary = reply, [], [], open_vocabulary

    def __call__(self, workdir, **kwargs):
        self.calls.append(kwargs)
        if "image" in kwargs:
            with Image.open(resolve_inside(workdir, kwargs["image"])) as im:
                self.images.append(np.asarray(im.convert("RGB")).copy())
        return self.reply(**kwargs) if callable(self.reply) else self.reply


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


NOISE = np.random.default_rng(0).integers(0, 256, (40, 60, 3))


def run(registry, code, files=None):
    return Sandbox(timeout_s=30, tools=registry, allow_weak_isolation=WEAK).run(code, files=files or {})


def test_offline_set_is_the_default_tools_plus_the_new_ones_and_maps_gta_names():
    reg = tool_set("offline")
    assert reg.names == OFFLINE and reg.host_names() == [] and reg.name == "offline"
    assert default_registry().names == OFFLINE[:7], "default_registry must keep today's tools"
    with_vqa = default_registry(vqa=Recorder(""))
    assert with_vqa.unavailable == ["MathOCR", "Solver", "Plot", "DrawBox", "AddText", "GoogleSearch", "TextToImage",
                                    "ImageStylization"]
    assert with_vqa.benchmark_names["CountGivenObject"] == with_vqa.benchmark_names["ImageDescription"] == "visual_qa"
    assert set(reg.benchmark_names) == set(GTA_TOOLS)
    assert reg.benchmark_names["CountGivenObject"] == "count_objects" and reg.benchmark_names["Solver"] == "solver"
    assert reg.unavailable == ["ImageDescription", "RegionAttributeDescription", "GoogleSearch", "TextToImage",
                               "ImageStylization"]
    assert describe_set(reg).endswith("unavailable here: ImageDescription, RegionAttributeDescription, GoogleSearch, "
                                      "TextToImage, ImageStylization")


def test_gta_set_with_every_backend_serves_all_fourteen_tools():
    backends = {b: Recorder("x") for b in BACKENDS if b != "face_detector"}
    reg = tool_set("gta", **backends)
    assert reg.unavailable == []
    assert reg.host_names() == ["visual_qa", "describe_image", "describe_region", "count_given_object",
                                "detect_objects", "segment", "web_search", "generate_image", "edit_image"]
    assert {g: reg.benchmark_names[g] for g in ("CountGivenObject", "TextToBbox", "ImageDescription")} == {
        "CountGivenObject": "count_given_object", "TextToBbox": "detect_objects", "ImageDescription": "describe_image"}
    only_captions = tool_set("gta", captioner=backends["captioner"])
    assert only_captions.unavailable == ["RegionAttributeDescription", "GoogleSearch", "TextToImage", "ImageStylization"]
    assert only_captions["describe_image"].fn.backend is backends["captioner"]


def test_sport_set_names_and_what_it_lacks():
    bare = tool_set("sport")
    assert bare.names == ["inspect_file_as_text"]
    assert bare.unavailable == [n for n in SPORT_TOOLS if n not in ("inspect_file_as_text", "final_answer")] + list(
        GTA_TOOLS)
    full = tool_set("sport", vqa=Recorder(""), detector=Recorder([], open_vocabulary=True), segmenter=Recorder([]),
                    web_search=Recorder([]), image_generator=Recorder(""), image_editor=Recorder(""))
    assert full.names == [n for n in SPORT_TOOLS if n != "final_answer"], "an open-vocabulary detector finds faces"
    assert full.unavailable == ["Calculator", "Solver", "Plot", "DrawBox", "AddText"]
    closed = tool_set("sport", detector=Recorder([]))
    assert "objectlocation" in closed and "facedetection" not in closed


@pytest.mark.parametrize("name, backends, error, match", [
    ("offline", {"vqa": Recorder("")}, ValueError, "no tool that uses vqa; the gta set"),
    ("gta", {"face_detector": Recorder([])}, ValueError, "face_detector"),
    ("sport", {"captioner": Recorder("")}, ValueError, "captioner"),
    ("gta", {"vqs": Recorder("")}, TypeError, "unknown backends"),
    ("gaia", {}, ValueError, "unknown tool set")])
def test_misconfiguration_is_refused(name, backends, error, match):
    with pytest.raises(error, match=match):
        tool_set(name, **backends)


def test_new_offline_tools_run_in_the_sandbox_child():
    code = ("print(draw_box('pic.png', '(5, 5, 30, 20)', label='x'))\n"
            "print(add_text('pic.png', 'hi', 'mm'))\n"
            "print(plot('bar', [1, 2, 3], ['a', 'b', 'c']))\n"
            "print(solver('x^2 = 4'))\n"
            "try:\n    solver('sin(x) = x')\nexcept ValueError as e:\n    print(e)\n")
    r = run(tool_set("offline"), code, {"pic.png": png(NOISE)})
    lines = r.stdout.splitlines()
    assert r.ok and lines[:3] == ["pic_box.png", "pic_text.png", "plot_bar_chart.png"], r
    assert json.loads(lines[3].replace("'", '"')) == {"solutions": [{"x": "-2"}, {"x": "2"}],
                                                      "approx": [{"x": -2.0}, {"x": 2.0}]}
    assert lines[4].startswith("solver: sympy has no method for sin(x) = x")
    assert {"pic_box.png", "pic_text.png", "plot_bar_chart.png"} <= set(r.files)
    assert [c["name"] for c in r.tool_calls] == ["draw_box", "add_text", "plot", "solver", "solver"]


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="Tesseract is not installed")
def test_math_ocr_runs_in_the_sandbox_child():
    from PIL import ImageDraw, ImageFont
    im = Image.new("RGB", (300, 80), "white")
    ImageDraw.Draw(im).text((20, 15), "6 * 7 = ?", fill="black", font=ImageFont.load_default(size=40))
    r = run(tool_set("offline"), "print(math_ocr('m.png')['value'])", {"m.png": png(np.asarray(im))})
    assert r.stdout == "42\n", r


def test_sport_names_reach_our_backends_renamed_and_come_back_in_sports_shape(tmp_path):
    (tmp_path / "notes.txt").write_text("meeting at 10")
    detections = [{"box": [1.25, 2.5, 30.0, 20.75], "score": 0.9, "label": "cat"}]
    vqa, det = Recorder("a cat"), Recorder(detections, open_vocabulary=True)
    seg = Recorder(lambda image, box=None: [{"label": "cat", "area": 4, "bbox": [0, 0, 2, 2], "mask": "m.png"}])
    search = Recorder([{"title": "Paris", "text": "capital of France"}, {"title": "", "text": "more"}])
    reg = tool_set("sport", vqa=vqa, detector=det, segmenter=seg, web_search=search, image_generator=Recorder("g.png"),
                   image_editor=Recorder("e.png"))
    code = ("print(visualizer(question='What is it?', image_path='pic.png'))\n"
            "print(objectlocation(object='cat', image_path='pic.png'))\n"
            "print(facedetection('pic.png'))\n"
            "print(segmentation(image_path='pic.png', prompt=[[0, 0, 10, 10], [5, 5, 20, 20]]))\n"
            "print(image_edit('make it blue', 'pic.png'), image_generator(prompt='a dog'))\n"
            "print(repr(ask_search_agent(query='What is the capital of France?')))\n"
            "print(inspect_file_as_text(file_path='notes.txt', question='when?'))\n"
            "try:\n    visualizer(image='pic.png')\nexcept Exception as e:\n    print(e)\n")
    r = run(reg, code, {"pic.png": png(NOISE), "notes.txt": tmp_path / "notes.txt"})
    assert r.stdout.splitlines() == [
        "a cat", "[[1.25, 2.5, 30.0, 20.75]]", "[[1, 2, 30, 21]]",
        "[{'label': 'cat', 'area': 4, 'bbox': [0, 0, 2, 2], 'mask': 'm.png', 'box': 0}, "
        "{'label': 'cat', 'area': 4, 'bbox': [0, 0, 2, 2], 'mask': 'm.png', 'box': 1}]",
        "e.png g.png", "'Paris: capital of France\\n\\nmore'", "meeting at 10",
        "visualizer: TypeError: missing a required argument: 'question'"], r
    assert vqa.calls == [{"question": "What is it?", "image": "pic.png"}]
    assert det.calls == [{"text": "cat", "image": "pic.png"}, {"image": "pic.png", "text": "human face"}]
    assert [c["box"] for c in seg.calls] == [[0, 0, 10, 10], [5, 5, 20, 20]]


def test_gta_composites_show_the_model_the_region_and_read_its_count():
    vqa = Recorder(lambda image, question: "I see three apples." if "How many" in question else "shiny red")
    reg = tool_set("gta", vqa=vqa)
    code = ("print(describe_region('pic.png', '(10, 5, 40, 30)', 'the colour'))\n"
            "print(count_given_object('pic.png', 'apples', box=[0, 0, 20, 20]), count_given_object('pic.png', 'apples'))\n"
            "print(describe_image('pic.png'))\n")
    r = run(reg, code, {"pic.png": png(NOISE)})
    assert r.stdout.splitlines() == ["shiny red", "3 3", "shiny red"], r
    assert (vqa.images[0] == NOISE[5:30, 10:40]).all(), "describe_region did not show the model the region"
    assert (vqa.images[1] == NOISE[:20, :20]).all() and (vqa.images[2] == NOISE).all()
    assert [c["question"] for c in vqa.calls] == ["Describe the colour in the image in detail.",
                                                  "How many apples are in the image? Answer with a number.",
                                                  "How many apples are in the image? Answer with a number.",
                                                  "Describe the image in detail."]
    assert not any(f.startswith(".region") for f in r.files), "the region file was left behind"
    vqa.reply = "I cannot tell."
    r = run(reg, "count_given_object('pic.png', 'apples')", {"pic.png": png(NOISE)})
    assert r.error.endswith("count_given_object: RuntimeError: count_given_object: the model's reply has no number: "
                            "'I cannot tell.'"), r.error


def test_backends_from_config_builds_what_each_entry_names():
    built = backends_from_config({"vqa": {"base_url": "http://127.0.0.1:9/v1", "model": "vlm", "max_retries": 0},
                                  "captioner": {"base_url": "http://127.0.0.1:9/v1", "model": "vlm"},
                                  "detector": {"url": "http://127.0.0.1:9/detect", "timeout_s": 3},
                                  "segmenter": None, "web_search": {}})
    assert isinstance(built["vqa"], OpenAIVisionQA) and isinstance(built["captioner"], VQADescription)
    assert built["detector"].url == "http://127.0.0.1:9/detect" and set(built) == {"vqa", "captioner", "detector"}
    assert tool_set("gta", **built).unavailable == ["GoogleSearch", "TextToImage", "ImageStylization"]
    for bad, match in [({"vqa": {"hf_folder": "/x"}}, "give exactly one of base_url"), ({"ocr": {"url": "u"}}, "unknown"),
                       ({"detector": {"url": "u", "hf_folder": "/x"}}, "exactly one"),
                       ({"vqa": {"base_url": "u", "model": "m", "colour": 1}}, "colour")]:
        with pytest.raises(ValueError, match=match):
            backends_from_config(bad)


@pytest.mark.parametrize("prompt, boxes", [(None, [None]), ([], [None]), ([0, 0, 10, 10], [[0, 0, 10, 10]]),
                                           ("(0, 0, 10, 10)", ["(0, 0, 10, 10)"]), ({"box": [1, 2, 3, 4]}, [{"box": [1, 2, 3, 4]}]),
                                           ([[0, 0, 1, 1], "(1, 1, 2, 2)"], [[0, 0, 1, 1], "(1, 1, 2, 2)"])])
def test_sports_segmentation_prompt_is_one_box_or_several(prompt, boxes):
    seen = []

    def segmenter(image, workdir, box=None):
        seen.append(box)
        return [{"label": "x"}]
    tool_set("sport", segmenter=segmenter)["segmentation"].fn("pic.png", prompt=prompt, workdir="/nowhere")
    assert seen == boxes
