"""Model backends from configuration: ``backends_from_config({"vqa": {...}, "detector": {...}})`` ->
keyword arguments for ``tool_sets.tool_set``.

Each entry says where its model is, by one key:

- ``base_url`` (with ``model``, optionally ``api_key``, ``timeout_s``): an OpenAI-compatible endpoint, for
  ``vqa``, ``captioner`` (the VQA model asked for a description), ``web_search``, ``image_generator``,
  ``image_editor``;
- ``hf_folder`` (optionally ``device``, and ``threshold`` for detectors): a local Hugging Face model folder,
  for ``captioner``, ``detector``, ``face_detector``, ``segmenter`` (loaded once, in this process);
- ``url`` (optionally ``timeout_s``): a detector speaking ``http_detector.py``'s protocol, for ``detector``
  and ``face_detector``.

An entry that is None or empty is not configured. Anything else is refused with the reason.
"""
from __future__ import annotations

from typing import Callable, Mapping

WHERE = {"vqa": ("base_url",), "captioner": ("base_url", "hf_folder"), "web_search": ("base_url",),
         "image_generator": ("base_url",), "image_editor": ("base_url",), "detector": ("hf_folder", "url"),
         "face_detector": ("hf_folder", "url"), "segmenter": ("hf_folder",)}


def backends_from_config(config: Mapping[str, Mapping | None]) -> dict[str, Callable]:
    backends = {}
    for name, entry in config.items():
        if name not in WHERE:
            raise ValueError(f"tools: unknown backend {name!r}; known: {', '.join(WHERE)}")
        if not entry:
            continue
        keys = [k for k in ("base_url", "hf_folder", "url") if k in entry]
        if len(keys) != 1 or keys[0] not in WHERE[name]:
            raise ValueError(f"tools.{name}: give exactly one of {', '.join(WHERE[name])} (got {sorted(entry)})")
        try:
            backends[name] = _build(name, keys[0], dict(entry))
        except TypeError as err:
            raise ValueError(f"tools.{name}: {err}") from None
    return backends


def _build(name: str, where: str, entry: dict) -> Callable:
    from sport_fast.tools import model_backed as mb
    if where == "url":
        from sport_fast.tools.http_detector import HTTPDetector
        return HTTPDetector(**entry)
    if where == "hf_folder":
        from sport_fast.tools import hf_models
        folder = entry.pop("hf_folder")
        cls = {"captioner": hf_models.HFCaptioner, "segmenter": hf_models.HFSegmenter}.get(name, hf_models.HFDetector)
        return cls(folder, **entry)
    if name == "captioner":
        from sport_fast.tools.vqa_tools import VQADescription
        return VQADescription(mb.OpenAIVisionQA(**entry))
    cls = {"vqa": mb.OpenAIVisionQA, "web_search": mb.OpenAIWebSearch, "image_generator": mb.OpenAIImageGenerator,
           "image_editor": mb.OpenAIImageEditor}[name]
    return cls(**entry)
