"""Model-backed tools answered by a local Hugging Face model folder (``save_pretrained`` output: config,
weights, processor files), loaded once per process in the parent and reached from the sandbox over the pipe.

- ``HFDetector`` fills ``detect_objects``: open-vocabulary detectors (OWL-ViT, OWLv2, which SPORT's
  objectlocation uses) take the text as the query ("a photo of <text>", SPORT's phrasing); closed-set ones
  (DETR and the other ``AutoModelForObjectDetection`` models) detect their labels and keep those the text
  names. Boxes come back in the original image's pixels: the processor's post-processing scales them from
  the model's input frame (OWLv2 pads the image to a square first, so its boxes scale by the longer side),
  then they are clipped to the image.
- ``HFSegmenter`` fills ``segment`` with a semantic-segmentation model (SegFormer, UPerNet, DPT, ...): the
  label map is resized to the image, and each label present becomes a region with a mask PNG in the workdir.
- ``HFCaptioner`` fills ``describe_image`` with an image-to-text model (BLIP, VisionEncoderDecoder, ...).

Inference is fp32 on ``device`` under ``torch.inference_mode``, one call at a time per model (a lock: eval
may run several sandboxes from threads).
"""
from __future__ import annotations

import io
import threading
from functools import lru_cache
from pathlib import Path

from PIL import Image

from sport_fast.tools.model_backed import resolve_inside, write_output
from sport_fast.tools.regions import clip_box, parse_box

OPEN_VOCABULARY = ("owlvit", "owlv2")


class HFDetector:
    def __init__(self, folder: str, device: str = "cpu", threshold: float = 0.1):
        self.model, self.processor, self.model_type = _load(str(folder), "detection", device)
        self.open_vocabulary, self.threshold, self.device = self.model_type in OPEN_VOCABULARY, threshold, device
        self.labels = {int(i): str(name) for i, name in self.model.config.id2label.items()}
        self.lock = threading.Lock()

    def __call__(self, image: str, text: str, workdir: str, top1: bool = False) -> list[dict]:
        with Image.open(resolve_inside(workdir, image)) as im:
            found = self.detect(im.convert("RGB"), text)
        return found[:1] if top1 else found

    def detect(self, im: Image.Image, text: str) -> list[dict]:
        """Detections [{"box": [x1, y1, x2, y2] pixels, "score", "label"}], best first."""
        import torch
        if not self.open_vocabulary and not any(_names(label, text) for label in self.labels.values()):
            known = ", ".join(sorted(set(self.labels.values()))[:30])
            raise ValueError(f"detect_objects: this detector knows fixed labels ({known}); {text!r} is none of them")
        if self.open_vocabulary:
            inputs = self.processor(text=[[f"a photo of {text}"]], images=im, return_tensors="pt", truncation=True)
        else:
            inputs = self.processor(images=im, return_tensors="pt")
        with self.lock, torch.inference_mode():
            outputs = self.model(**inputs.to(self.device))
        post = getattr(self.processor, "image_processor", self.processor)
        result = post.post_process_object_detection(outputs, threshold=self.threshold,
                                                    target_sizes=[(im.height, im.width)])[0]
        found = []
        for box, score, label in zip(result["boxes"].tolist(), result["scores"].tolist(), result["labels"].tolist()):
            name = text if self.open_vocabulary else self.labels.get(int(label), str(label))
            if self.open_vocabulary or _names(name, text):
                found.append({"box": clip_box(box, im.width, im.height), "score": round(float(score), 4),
                              "label": name})
        return sorted(found, key=lambda d: -d["score"])


class HFSegmenter:
    def __init__(self, folder: str, device: str = "cpu"):
        self.model, self.processor, self.model_type = _load(str(folder), "segmentation", device)
        self.labels = {int(i): str(name) for i, name in self.model.config.id2label.items()}
        self.device, self.lock = device, threading.Lock()

    def __call__(self, image: str, workdir: str, box=None) -> list[dict]:
        with Image.open(resolve_inside(workdir, image)) as im:
            im = im.convert("RGB")
        label_map = self.label_map(im)  # (H, W) label ids
        if box is not None:
            x1, y1, x2, y2 = parse_box(box, im.width, im.height)
            inside = label_map.new_zeros(label_map.shape, dtype=bool)
            inside[y1:y2, x1:x2] = True
            label_map = label_map.masked_fill(~inside, -1)
        regions = [self._region(label_map == label, label, workdir) for label in label_map.unique().tolist()
                   if label >= 0]
        return sorted(regions, key=lambda r: -r["area"])

    def label_map(self, im: Image.Image):
        import torch
        inputs = self.processor(images=im, return_tensors="pt")
        with self.lock, torch.inference_mode():
            outputs = self.model(**inputs.to(self.device))
        return self.processor.post_process_semantic_segmentation(outputs, target_sizes=[(im.height, im.width)])[0].cpu()

    def _region(self, mask, label: int, workdir: str) -> dict:
        ys, xs = mask.nonzero(as_tuple=True)
        png = io.BytesIO()
        Image.fromarray(mask.numpy().astype("uint8") * 255, mode="L").save(png, format="PNG")
        name = self.labels.get(label, str(label))
        bbox = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
        return {"label": name, "area": int(mask.sum()), "bbox": bbox,
                "mask": write_output(workdir, f"mask_{_slug(name)}", png.getvalue())}


class HFCaptioner:
    def __init__(self, folder: str, device: str = "cpu", max_new_tokens: int = 60):
        self.model, self.processor, self.model_type = _load(str(folder), "captioning", device)
        self.device, self.max_new_tokens, self.lock = device, max_new_tokens, threading.Lock()

    def __call__(self, image: str, workdir: str) -> str:
        import torch
        with Image.open(resolve_inside(workdir, image)) as im:
            inputs = self.processor(images=im.convert("RGB"), return_tensors="pt")
        with self.lock, torch.inference_mode():
            tokens = self.model.generate(**inputs.to(self.device), max_new_tokens=self.max_new_tokens, do_sample=False)
        return self.processor.batch_decode(tokens, skip_special_tokens=True)[0].strip()


@lru_cache(maxsize=None)
def _load(folder: str, kind: str, device: str):
    """(model, processor, model_type) of a folder, once per process: eval mode, fp32, on ``device``."""
    import transformers as tf
    if not (Path(folder) / "config.json").is_file():
        raise ValueError(f"{kind} model: {folder} is not a saved Hugging Face model folder (no config.json)")
    model_type = tf.AutoConfig.from_pretrained(folder).model_type
    if kind == "detection" and model_type in _zero_shot_types():
        if model_type not in OPEN_VOCABULARY:
            raise ValueError(f"detection model: {model_type} is not supported (supported open-vocabulary "
                             f"detectors: {', '.join(OPEN_VOCABULARY)}; or any closed-set detector)")
        model_class, processor_class = tf.AutoModelForZeroShotObjectDetection, tf.AutoProcessor
    else:
        model_class, processor_class = {
            "detection": (tf.AutoModelForObjectDetection, tf.AutoImageProcessor),
            "segmentation": (tf.AutoModelForSemanticSegmentation, tf.AutoImageProcessor),
            "captioning": (tf.AutoModelForImageTextToText, tf.AutoProcessor)}[kind]
    try:
        model = model_class.from_pretrained(folder).to(device).eval()
    except ValueError as err:
        raise ValueError(f"{kind} model: {folder} ({model_type}) is not a {kind} model: {err}") from None
    return model, processor_class.from_pretrained(folder), model_type


def _zero_shot_types() -> set[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_ZERO_SHOT_OBJECT_DETECTION_MAPPING_NAMES
    return set(MODEL_FOR_ZERO_SHOT_OBJECT_DETECTION_MAPPING_NAMES)


def _names(label: str, text: str) -> bool:
    """Whether ``text`` asks for a closed-set ``label``: "cars", "a red car" and "car" all name "car"."""
    label = label.lower().strip()
    words = {w.rstrip("s") for w in text.lower().replace(",", " ").split()} | {text.lower().strip().rstrip("s")}
    return label.rstrip("s") in words


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower())[:32] or "region"
