"""Named tool sets: ``tool_set(name, **backends) -> ToolRegistry``.

- ``offline``: every tool that needs no model: the original seven (``default_registry``) plus draw_box,
  add_text, plot, solver and math_ocr. It takes no backends.
- ``gta``: the offline tools plus our model-backed tools for every backend given, so GTA's fourteen tools
  each have a counterpart where the configuration allows (``GTA_TO_OURS``).
- ``sport``: SPORT's nine tools, under SPORT's names and argument conventions (``sport_names.py``).

Backends are host callables, called by keyword (``interfaces.py`` says what each is asked): ``vqa`` (image,
question), ``captioner`` (image), ``detector`` and ``face_detector`` (image, text, top1), ``segmenter`` (image,
box), ``web_search`` (query), ``image_generator`` (prompt), ``image_editor`` (image, prompt); each also gets
``workdir``. ``backends.py`` builds them from configuration. A backend a set would not use is refused.

Each registry's ``benchmark_names`` maps GTA's tool names (and, for ``sport``, SPORT's) to the tool of the
set that fulfils them, None where this configuration lacks one: evaluation counts GTA's expected tools
through it (ToolAcc) and reports tasks that need a tool the set lacks (``registry.unavailable``).
"""
from __future__ import annotations

from typing import Callable

from sport_fast.tools import drawing, interfaces, ocr, plot, solver, sport_names, vqa_tools
from sport_fast.tools.registry import Tool, ToolRegistry

SETS = ("offline", "sport", "gta")
BACKENDS = ("vqa", "captioner", "detector", "face_detector", "segmenter", "web_search", "image_generator",
            "image_editor")
GTA_TOOLS = ("OCR", "ImageDescription", "RegionAttributeDescription", "CountGivenObject", "TextToBbox", "MathOCR",
             "Calculator", "Solver", "Plot", "DrawBox", "AddText", "GoogleSearch", "TextToImage", "ImageStylization")
SPORT_TOOLS = ("visualizer", "objectlocation", "facedetection", "segmentation", "image_generator", "image_edit",
               "ask_search_agent", "inspect_file_as_text", "final_answer")

# GTA's tool -> our tools that do its job, best first (visual_qa: the general tool; count_objects: colour
# regions, the offline stand-in)
GTA_TO_OURS = {
    "OCR": ("ocr",), "ImageDescription": ("describe_image", "visual_qa"),
    "RegionAttributeDescription": ("describe_region", "visual_qa"),
    "CountGivenObject": ("count_given_object", "visual_qa", "count_objects"),
    "TextToBbox": ("detect_objects", "count_objects"),
    "MathOCR": ("math_ocr",), "Calculator": ("calculator",), "Solver": ("solver",), "Plot": ("plot",),
    "DrawBox": ("draw_box",), "AddText": ("add_text",), "GoogleSearch": ("web_search",),
    "TextToImage": ("generate_image",), "ImageStylization": ("edit_image",)}
# GTA's tool -> SPORT's, as SPORT's GTA query pipeline maps them (its TOOL_MAP), except TextToBbox, which that
# map sends to ask_search_agent: here it is the detector. Calculator, Solver, Plot, DrawBox and AddText are
# plain Python there, so the sport set has no tool for them.
GTA_TO_SPORT = {
    "OCR": "visualizer", "MathOCR": "visualizer", "ImageDescription": "visualizer",
    "RegionAttributeDescription": "visualizer", "CountGivenObject": "visualizer", "TextToBbox": "objectlocation",
    "GoogleSearch": "ask_search_agent", "TextToImage": "image_generator", "ImageStylization": "image_edit"}
_USES = {"offline": (), "gta": tuple(b for b in BACKENDS if b != "face_detector"),
         "sport": tuple(b for b in BACKENDS if b != "captioner")}


def tool_set(name: str, **backends: Callable | None) -> ToolRegistry:
    """The registry of set ``name`` with the given backends (None: not configured)."""
    if name not in SETS:
        raise ValueError(f"unknown tool set {name!r}; known: {', '.join(SETS)}")
    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown:
        raise TypeError(f"tool_set: unknown backends {unknown}; known: {', '.join(BACKENDS)}")
    given = {k: v for k, v in backends.items() if v is not None}
    unused = sorted(set(given) - set(_USES[name]))
    if unused:
        raise ValueError(f"tool set {name!r} has no tool that uses {', '.join(unused)}"
                         + ("; the gta set has our model-backed tools" if name == "offline" else ""))
    if name == "sport":
        tools = sport_tools(given)
        names = {t.name for t in tools} | {"final_answer"}
        mapping = {n: n if n in names else None for n in SPORT_TOOLS}
        mapping.update({g: GTA_TO_SPORT[g] if GTA_TO_SPORT.get(g) in names else None for g in GTA_TOOLS})
    else:
        tools = offline_tools() + host_tools(given)
        mapping = gta_names({t.name for t in tools})
    return ToolRegistry(tools, name=name, benchmark_names=mapping)


def default_registry(vqa: Callable | None = None, web_search: Callable | None = None) -> ToolRegistry:
    """The original offline tools, plus the model-backed ones that are configured (absent, not faked,
    otherwise). ``vqa``/``web_search``: host callables, e.g. from ``tools.model_backed``.
    ``tool_sets.tool_set("offline")`` adds the drawing, chart, solver and math-OCR tools."""
    from sport_fast.tools import calculator, files, image
    tools = [Tool("image_size", image.image_size), Tool("crop", image.crop), Tool("color_stats", image.color_stats),
             Tool("count_objects", image.count_objects), Tool("ocr", ocr.ocr),
             Tool("calculator", calculator.calculator), Tool("read_file", files.read_file)]
    if vqa is not None:
        tools.append(Tool("visual_qa", vqa, runs_in="host", spec=interfaces.visual_qa))
    if web_search is not None:
        tools.append(Tool("web_search", web_search, runs_in="host", spec=interfaces.web_search))
    return ToolRegistry(tools, name="default", benchmark_names=gta_names({t.name for t in tools}))


def gta_names(names: set[str]) -> dict[str, str | None]:
    """GTA's tool -> the first of our tools in ``names`` that does its job, or None."""
    return {g: next((ours for ours in GTA_TO_OURS[g] if ours in names), None) for g in GTA_TOOLS}


def describe_set(registry: ToolRegistry) -> str:
    """One line for start-up logs and the run's manifest."""
    missing = ", ".join(registry.unavailable) or "none"
    return f"tool set {registry.name}: {', '.join(registry.names)}; benchmark tools unavailable here: {missing}"


def offline_tools() -> list[Tool]:
    extra = [Tool("draw_box", drawing.draw_box), Tool("add_text", drawing.add_text), Tool("plot", plot.plot),
             Tool("solver", solver.solver), Tool("math_ocr", ocr.math_ocr)]
    base = default_registry()
    return [base[n] for n in base.names] + extra


def host_tools(b: dict[str, Callable]) -> list[Tool]:
    """Our model-backed tools for the backends given."""
    tools = []

    def add(name: str, backend: Callable) -> None:
        spec = getattr(interfaces, name)
        tools.append(Tool(name, interfaces.Bound(backend, spec), runs_in="host", spec=spec))
    if "vqa" in b:
        add("visual_qa", b["vqa"])
    if "captioner" in b or "vqa" in b:
        add("describe_image", b.get("captioner") or vqa_tools.VQADescription(b["vqa"]))
    if "vqa" in b:
        add("describe_region", vqa_tools.VQARegionDescription(b["vqa"]))
        add("count_given_object", vqa_tools.VQACount(b["vqa"]))
    for backend, name in (("detector", "detect_objects"), ("segmenter", "segment"), ("web_search", "web_search"),
                          ("image_generator", "generate_image"), ("image_editor", "edit_image")):
        if backend in b:
            add(name, b[backend])
    return tools


def sport_tools(b: dict[str, Callable]) -> list[Tool]:
    """SPORT's tools for the backends given (inspect_file_as_text needs none)."""
    s = sport_names
    tools = []

    def add(spec: Callable, backend: Callable, **how) -> None:
        tools.append(Tool(spec.__name__, interfaces.Bound(backend, spec, **how), runs_in="host", spec=spec))
    if "vqa" in b:
        add(s.visualizer, b["vqa"], rename={"image_path": "image"})
    if "detector" in b:
        add(s.objectlocation, b["detector"], rename={"object": "text", "image_path": "image"}, convert=s.boxes_only)
    faces = b.get("face_detector") or (b["detector"] if getattr(b.get("detector"), "open_vocabulary", False) else None)
    if faces is not None:
        add(s.facedetection, faces, rename={"image_path": "image"}, fixed={"text": s.FACE_QUERY},
            convert=s.pixel_boxes)
    if "segmenter" in b:
        add(s.segmentation, s.SegmentBoxes(b["segmenter"]))
    if "image_generator" in b:
        add(s.image_generator, b["image_generator"])
    if "image_editor" in b:
        add(s.image_edit, b["image_editor"], rename={"image_path": "image"})
    if "web_search" in b:
        add(s.ask_search_agent, b["web_search"], convert=s.joined_results)
    return tools + [Tool("inspect_file_as_text", s.inspect_file_as_text)]


def registry_for(section) -> ToolRegistry:
    """The run's tools from its ``tools`` section (``set``, ``backends``; see ``backends.py``)."""
    from sport_fast.tools.backends import backends_from_config
    backends = backends_from_config(section.backends)
    if section.set == "default":
        return default_registry(vqa=backends.pop("vqa", None), web_search=backends.pop("web_search", None)) \
            if not backends else _refuse_default(backends)
    return tool_set(section.set, **backends)


def _refuse_default(backends: dict):
    raise ValueError(f"the default tool set has no tool that uses {', '.join(sorted(backends))}: choose "
                     f"tools.set=gta or sport")
