"""Local Hugging Face backends on tiny RANDOM models built here (no hub): the wiring, not the skill.

Truth for boxes: each family's documented box convention applied by hand to the model's raw output
(centre-size boxes normalised to the image for OWL-ViT and DETR, to the padded square for OWLv2), on a
non-square image so a wrong scale shows. Truth for segmentation: the logits resized to the image by hand.
"""
import importlib.util

import numpy as np
import pytest
import torch
import transformers as tf
from PIL import Image

from sport_fast.sandbox.layers import REQUIRED_LAYERS, available_layers
from sport_fast.sandbox.sandbox import Sandbox
from sport_fast.tools import tool_set
from sport_fast.tools.backends import backends_from_config
from sport_fast.tools.hf_models import HFCaptioner, HFDetector, HFSegmenter

W, H = 64, 40
LABELS = {0: "cat", 1: "dog", 2: "face"}
TINY_TEXT = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4)
TINY_VISION = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=32,
                   patch_size=8)


def clip_tokenizer() -> tf.CLIPTokenizer:
    """Characters as the vocabulary; special tokens last, as OWL-ViT masks queries whose first id is 0."""
    vocab = {}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c], vocab[c + "</w>"] = len(vocab), len(vocab) + 1
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    tok = tf.CLIPTokenizer(vocab=vocab, merges=[])
    tok.model_max_length = 16
    return tok


def owl_folder(root, v2: bool) -> str:
    tok = clip_tokenizer()
    text = dict(TINY_TEXT, vocab_size=len(tok), max_position_embeddings=16, bos_token_id=tok.bos_token_id,
                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    size = {"height": 32, "width": 32}
    if v2:
        model = tf.Owlv2ForObjectDetection(tf.Owlv2Config(text_config=text, vision_config=TINY_VISION, projection_dim=32))
        processor = tf.Owlv2Processor(image_processor=tf.Owlv2ImageProcessor(size=size), tokenizer=tok)
    else:
        model = tf.OwlViTForObjectDetection(tf.OwlViTConfig(text_config=text, vision_config=TINY_VISION, projection_dim=32))
        processor = tf.OwlViTProcessor(image_processor=tf.OwlViTImageProcessor(size=size, crop_size=size), tokenizer=tok)
    return save(root / ("owlv2" if v2 else "owlvit"), model, processor)


def detr_folder(root) -> str:
    backbone = tf.ResNetConfig(embedding_size=8, hidden_sizes=[8, 8, 8, 8], depths=[1, 1, 1, 1], out_features=["stage4"])
    config = tf.DetrConfig(use_timm_backbone=False, backbone_config=backbone, d_model=32, encoder_layers=1,
                           decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                           decoder_ffn_dim=32, num_queries=12, id2label=LABELS,
                           label2id={v: k for k, v in LABELS.items()})
    processor = tf.DetrImageProcessor(size={"shortest_edge": 32, "longest_edge": 64})
    return save(root / "detr", tf.DetrForObjectDetection(config), processor)


def segformer_folder(root) -> str:
    config = tf.SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16],
                                patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 2], mlp_ratios=[2, 2],
                                decoder_hidden_size=16, id2label=LABELS, label2id={v: k for k, v in LABELS.items()})
    processor = tf.SegformerImageProcessor(size={"height": 32, "width": 32})
    return save(root / "segformer", tf.SegformerForSemanticSegmentation(config), processor)


def blip_folder(root) -> str:
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + "a photo of cat dog red blue square the".split()
    tok = tf.BertTokenizer(vocab={w: i for i, w in enumerate(words)})
    text = dict(TINY_TEXT, vocab_size=len(words), max_position_embeddings=32, encoder_hidden_size=32, bos_token_id=2,
                sep_token_id=3, pad_token_id=0, eos_token_id=3)
    model = tf.BlipForConditionalGeneration(tf.BlipConfig(text_config=text, vision_config=TINY_VISION, projection_dim=32))
    processor = tf.BlipProcessor(image_processor=tf.BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tok)
    return save(root / "blip", model, processor)


def save(folder, model, processor) -> str:
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("hf")
    return {"owlvit": owl_folder(root, v2=False), "owlv2": owl_folder(root, v2=True), "detr": detr_folder(root),
            "segformer": segformer_folder(root), "blip": blip_folder(root)}


@pytest.fixture
def workdir(tmp_path):
    pixels = np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "pic.png")
    return str(tmp_path)


def raw_detections(folder: str, kind: str, image: Image.Image, text: str) -> list[tuple[float, list[float], int]]:
    """(score, [x1, y1, x2, y2] in image pixels, label id), best first, from the model's raw outputs."""
    processor = tf.AutoProcessor.from_pretrained(folder) if kind != "detr" else tf.AutoImageProcessor.from_pretrained(folder)
    model = (tf.AutoModelForObjectDetection if kind == "detr" else tf.AutoModelForZeroShotObjectDetection
             ).from_pretrained(folder).eval()
    inputs = (processor(images=image, return_tensors="pt") if kind == "detr" else
              processor(text=[[f"a photo of {text}"]], images=image, return_tensors="pt", truncation=True))
    with torch.no_grad():
        out = model(**inputs)
    if kind == "detr":  # softmax over the classes and "no object"; the last is dropped
        scores, labels = out.logits.softmax(-1)[0, :, :-1].max(-1)
    else:
        scores, labels = out.logits.sigmoid()[0].max(-1)
    side = max(W, H)
    scale = torch.tensor([side, side, side, side] if kind == "owlv2" else [W, H, W, H], dtype=torch.float32)
    cx, cy, w, h = out.pred_boxes[0].unbind(-1)
    corners = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1) * scale
    corners = torch.minimum(corners.clamp(min=0), torch.tensor([W, H, W, H], dtype=torch.float32))
    return sorted(((float(s), c.tolist(), int(lbl)) for s, c, lbl in zip(scores, corners, labels)), key=lambda t: -t[0])


OWLV2 = pytest.param("owlv2", marks=pytest.mark.skipif(
    importlib.util.find_spec("scipy") is None and importlib.util.find_spec("torchvision") is None,
    reason="OWLv2's image processor needs scipy or torchvision"))


@pytest.mark.parametrize("kind", ["owlvit", OWLV2, "detr"])
def test_detector_boxes_are_in_the_original_images_pixels(folders, workdir, kind):
    detector = HFDetector(folders[kind], threshold=0.0)
    found = sorted(detector("pic.png", "cat", workdir=workdir), key=lambda d: (-d["score"], d["box"]))
    with Image.open(f"{workdir}/pic.png") as im:
        truth = raw_detections(folders[kind], kind, im.convert("RGB"), "cat")
    if kind == "detr":
        truth = [t for t in truth if LABELS[t[2]] == "cat"]
    truth = sorted(((round(score, 4), [round(v, 1) for v in box], label) for score, box, label in truth),
                   key=lambda t: (-t[0], t[1]))   # a random model ties scores: order ties by box
    assert detector.open_vocabulary == (kind != "detr") and len(found) == len(truth) > 0
    for got, (score, box, _) in zip(found, truth):
        assert got["label"] == "cat" and abs(got["score"] - score) < 1e-4
        assert np.abs(np.array(got["box"]) - np.array(box)).max() <= 0.051, (kind, got["box"], box)
        x1, y1, x2, y2 = got["box"]
        assert 0 <= x1 <= x2 <= W and 0 <= y1 <= y2 <= H
    assert detector("pic.png", "cat", workdir=workdir, top1=True)[0]["score"] == found[0]["score"]


def test_a_closed_set_detector_refuses_labels_it_does_not_have(folders, workdir):
    with pytest.raises(ValueError, match=r"fixed labels \(cat, dog, face\); 'giraffe' is none of them"):
        HFDetector(folders["detr"])("pic.png", "giraffe", workdir=workdir)
    assert all(d["label"] == "dog" for d in HFDetector(folders["detr"], threshold=0.0)("pic.png", "two dogs",
                                                                                       workdir=workdir))


def test_segmenter_masks_cover_the_image_as_the_resized_logits_say(folders, workdir):
    regions = HFSegmenter(folders["segformer"])("pic.png", workdir=workdir)
    processor = tf.AutoImageProcessor.from_pretrained(folders["segformer"])
    model = tf.AutoModelForSemanticSegmentation.from_pretrained(folders["segformer"]).eval()
    with Image.open(f"{workdir}/pic.png") as im, torch.no_grad():
        logits = model(**processor(images=im.convert("RGB"), return_tensors="pt")).logits
    truth = torch.nn.functional.interpolate(logits, size=(H, W), mode="bilinear", align_corners=False)[0].argmax(0)
    assert sum(r["area"] for r in regions) == W * H and regions == sorted(regions, key=lambda r: -r["area"])
    name_to_id = {v: k for k, v in LABELS.items()}
    for r in regions:
        with Image.open(f"{workdir}/{r['mask']}") as m:
            mask = np.asarray(m) > 0
        ys, xs = np.nonzero(mask)
        assert mask.shape == (H, W) and mask.sum() == r["area"]
        assert r["bbox"] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        assert (mask == (truth == name_to_id[r["label"]]).numpy()).all(), f"mask of {r['label']} differs"


def test_segmenter_box_keeps_only_the_parts_inside(folders, workdir):
    regions = HFSegmenter(folders["segformer"])("pic.png", workdir=workdir, box="(8, 4, 40, 30)")
    assert sum(r["area"] for r in regions) == 32 * 26
    assert all(8 <= r["bbox"][0] and r["bbox"][2] <= 40 and 4 <= r["bbox"][1] and r["bbox"][3] <= 30 for r in regions)


def test_captioner_is_greedy_generation_decoded(folders, workdir):
    caption = HFCaptioner(folders["blip"], max_new_tokens=5)("pic.png", workdir=workdir)
    processor = tf.AutoProcessor.from_pretrained(folders["blip"])
    model = tf.AutoModelForImageTextToText.from_pretrained(folders["blip"]).eval()
    with Image.open(f"{workdir}/pic.png") as im, torch.no_grad():
        tokens = model.generate(**processor(images=im.convert("RGB"), return_tensors="pt"), max_new_tokens=5,
                                do_sample=False)
    assert isinstance(caption, str) and caption == processor.batch_decode(tokens, skip_special_tokens=True)[0].strip()
    assert len(caption.split()) <= 5


def test_models_load_once_and_wrong_folders_are_refused(folders, tmp_path):
    a, b = HFDetector(folders["owlvit"]), backends_from_config({"detector": {"hf_folder": folders["owlvit"]}})["detector"]
    assert a.model is b.model, "the same folder was loaded twice"
    with pytest.raises(ValueError, match="no config.json"):
        HFSegmenter(str(tmp_path))
    with pytest.raises(ValueError, match="is not a detection model"):
        HFDetector(folders["segformer"])


def test_hf_backends_through_the_sandbox(folders, workdir):
    """The parent runs the models; the child gets JSON, and can open the mask files the parent wrote."""
    reg = tool_set("gta", detector=HFDetector(folders["owlvit"], threshold=0.0), segmenter=HFSegmenter(folders["segformer"]),
                   captioner=HFCaptioner(folders["blip"], max_new_tokens=4))
    sport = tool_set("sport", detector=reg["detect_objects"].fn.backend)
    code = ("d = detect_objects('pic.png', 'cat', top1=True)\nprint(len(d), sorted(d[0]))\n"
            "s = segment('pic.png')\nprint(sum(r['area'] for r in s), open(s[0]['mask'], 'rb').read(4))\n"
            "print(type(describe_image('pic.png')).__name__)\n")
    with open(f"{workdir}/pic.png", "rb") as f:
        files = {"pic.png": f.read()}
    weak = not all(available_layers()[k] for k in REQUIRED_LAYERS)
    r = Sandbox(timeout_s=60, tools=reg, allow_weak_isolation=weak).run(code, files=files)
    assert r.stdout.splitlines() == ["1 ['box', 'label', 'score']", f"{W * H} b'\\x89PNG'", "str"], r
    r = Sandbox(timeout_s=60, tools=sport, allow_weak_isolation=weak).run(
        "b = objectlocation('cat', 'pic.png')\nf = facedetection('pic.png')\n"
        "print(all(len(x) == 4 for x in b + f), all(isinstance(v, int) for x in f for v in x))", files=files)
    assert r.stdout == "True True\n", r

