"""LLaMA-Factory sharegpt pairs -> StepGroups: grouping, token split, images, errors."""
import json

import pytest
import torch

from sport_fast import StepStore, branch_logps
from sport_fast.data.sharegpt import Qwen2VLImagePlaceholder, import_sharegpt_pairs
from sport_fast.model.vision import ImageInputs
from tiny_models import IMAGE_PAD, random_image, separate_forward_logps, tiny_image_processor, tiny_qwen2_vl, vl_tokenizer

CONV = [{"from": "human", "value": "Count the red squares."},
        {"from": "gpt", "value": "Thought: look.\n```py\nprint(size())\n```<end_action>"},
        {"from": "observation", "value": "Observation: (56, 56)"}]


def record(chosen, rejected, conv=CONV, **extra):
    return {"conversations": conv, "chosen": {"from": "gpt", "value": chosen},
            "rejected": {"from": "gpt", "value": rejected}, "system": "You use tools.", **extra}


def write(tmp_path, records, jsonl=False):
    path = tmp_path / ("data.jsonl" if jsonl else "data.json")
    path.write_text("\n".join(json.dumps(r) for r in records) if jsonl else json.dumps(records))
    return path


@pytest.mark.parametrize("jsonl", [False, True])
def test_consecutive_pairs_with_one_context_become_one_group(tmp_path, smollm2, jsonl):
    _, tok = smollm2
    records = [record("A", "B"), record("A", "C"), record("A", "D"),
               record("A", "E", conv=CONV[:1]), record("X", "Y")]
    groups = import_sharegpt_pairs(write(tmp_path, records, jsonl), tok, StepStore(tmp_path / "store"))
    assert [len(g.rejected) for g in groups] == [3, 1, 1]
    g = groups[0]
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert [tok.decode(c).strip() for c in g.candidate_ids] == ["A<|im_end|>", "B<|im_end|>", "C<|im_end|>", "D<|im_end|>"]
    assert all(c[-2:-1] == [im_end] or c[-1] == im_end for c in g.candidate_ids)
    assert tok.decode(g.context_ids).endswith("<|im_start|>assistant\n")
    assert "Observation: (56, 56)" in tok.decode(g.context_ids)
    assert len(StepStore(tmp_path / "store")) == 3


@pytest.mark.parametrize("bad,match", [
    ({"conversations": CONV}, "'chosen'"),
    ({"chosen": "a", "rejected": "b"}, "conversations"),
    (record("a", "b", conv=[{"from": "robot", "value": "x"}]), "unknown role"),
    (record("a", "b", images=["missing.png"], conv=[{"from": "human", "value": "<image>hi"}]), "not found"),
    (record("a", "b", images=[]) | {"conversations": [{"from": "human", "value": "<image>hi"}]}, "1 <image> tags"),
])
def test_bad_records_name_the_problem(tmp_path, bad, match):
    with pytest.raises(ValueError, match=match):
        import_sharegpt_pairs(write(tmp_path, [bad]), vl_tokenizer())


def test_empty_file_is_refused(tmp_path):
    (tmp_path / "empty.json").write_text("")
    with pytest.raises(ValueError, match="empty"):
        import_sharegpt_pairs(tmp_path / "empty.json", vl_tokenizer())


def test_images_are_stored_once_and_imported_groups_score_like_separate_forwards(tmp_path):
    for i in range(2):
        random_image(i).save(tmp_path / f"img{i}.png")
    conv = [{"from": "human", "value": "w1 <image> w2 w3"}]
    records = [record("w4 w5", "w6", conv=conv, images=["img0.png"]),
               record("w4 w5", "w7 w8", conv=conv, images=["img0.png"]),
               record("w9", "w10", conv=conv, images=["img1.png"])]
    store = StepStore(tmp_path / "store")
    processor = tiny_image_processor()
    groups = import_sharegpt_pairs(write(tmp_path, records), vl_tokenizer(), store, image_root=tmp_path,
                                   placeholder=Qwen2VLImagePlaceholder(processor))
    assert [len(g.candidate_ids) for g in groups] == [3, 2]
    assert len(list((tmp_path / "store" / "images").iterdir())) == 2
    assert groups[0].context_ids.count(IMAGE_PAD) == 4  # 56x56 -> 4x4 patches -> 2x2 merged

    from PIL import Image
    model = tiny_qwen2_vl(0)
    inputs = ImageInputs(loader=lambda h: Image.open(store.image_path(h)).convert("RGB"), processor=processor)
    got = branch_logps(model, groups, images=inputs)
    for group, sums in zip(groups, got):
        pix = processor(images=[inputs.loader(h) for h in group.images], return_tensors="pt")
        want = separate_forward_logps(model, group, image_token=IMAGE_PAD, pixel_values=pix["pixel_values"],
                                      image_grid_thw=pix["image_grid_thw"])
        torch.testing.assert_close(sums.double(), torch.tensor(want, dtype=torch.float64), rtol=1e-5, atol=1e-6)
