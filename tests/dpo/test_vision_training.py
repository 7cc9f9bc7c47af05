"""A vision-language policy in the loop: the agent shows it the task's images, exploration stores them with the
groups, and the reference / training passes read them back and score exactly what the sampler sampled."""
import hashlib
import json
from pathlib import Path

import torch
from PIL import Image

from sport_fast.agent.agent import Agent, AgentConfig
from sport_fast.dpo.branch_logps import branch_logps
from sport_fast.model.chat_format import ChatFormat
from sport_fast.config import TrainSection
from sport_fast.run.explore import explore
from sport_fast.dpo.reference_logps import compute_ref_logps
from sport_fast.sampler.prefix_sampler import PrefixSampler
from sport_fast.sandbox.sandbox import Sandbox
from sport_fast.data.store import StepStore
from sport_fast.agent.vision_prompt import VisionPrompt
from sport_fast.tools import default_registry
from sport_fast.dpo.trainer import train_round
from sport_fast.model.vision import ImageInputs
from tiny_models import IMAGE_PAD, random_image, tiny_image_processor, tiny_qwen2_vl, vision_tasks, vl_tokenizer



def _always_first(task, step, candidates, history):
    return 0


def test_the_policy_sees_the_images_and_training_scores_what_the_sampler_sampled(tmp_path):
    model, tok, processor = tiny_qwen2_vl(4), vl_tokenizer(), tiny_image_processor()
    vision = VisionPrompt.for_model(model, tok, processor)
    assert VisionPrompt.for_model(_text_model(), tok, None) is None
    tools = default_registry()
    agent = Agent(PrefixSampler(model, tok, seed=1), ChatFormat(tok), Sandbox(timeout_s=10, tools=tools,
                  allow_weak_isolation=True), tools, AgentConfig(k=3, max_steps=2, max_new_tokens=6,
                                                                  first_temperature=1.0, other_temperature=1.0),
                  select=_always_first, selection_name="first", vision=vision, seed=2)
    tasks = vision_tasks(tmp_path)
    store = StepStore(tmp_path / "store")
    explore(tasks, agent, store, tmp_path / "trajectories.jsonl", rule="all", bleu_threshold=0.3, round_=0, batch=2)

    records = [json.loads(line)["trajectory"] for line in (tmp_path / "trajectories.jsonl").read_text().splitlines()]
    groups = list(store)
    assert len(groups) >= 2
    for task, rec in zip(tasks, records):
        png = Path(task.files["pic.png"])
        assert rec["images"] == [str(png)]
        with Image.open(png) as im:
            grid = processor(images=[im.convert("RGB")], return_tensors="pt")["image_grid_thw"][0]
        assert rec["context_ids"].count(IMAGE_PAD) == int(grid.prod()) // 4 > 0  # one pad per 2x2 merged patches
        mine = [g for g in groups if g.meta["task_id"] == task.id]
        assert mine and all(g.images == [hashlib.sha256(png.read_bytes()).hexdigest()] for g in mine)

    # the packed training forward over the stored images gives the sampler's own log-probs
    images = store.image_inputs(processor)
    got = branch_logps(model, groups, images=images)
    for group, sums in zip(groups, got):
        rec = next(r for r in records if r["task_id"] == group.meta["task_id"])
        step = rec["steps"][group.meta["step"]]
        want = torch.tensor([sum(c["logprobs"]) for c in step["candidates"]])
        torch.testing.assert_close(sums.detach(), want, rtol=1e-4, atol=1e-4)
    other = ImageInputs(loader=lambda h: random_image(999), processor=processor)
    t0 = [i for i, g in enumerate(groups) if g.meta["task_id"] == "t0"]
    changed = branch_logps(model, [groups[i] for i in t0], images=other)
    assert any((a - got[i]).abs().max() > 1e-3 for a, i in zip(changed, t0)), "the image made no difference"

    # reference and one step-DPO round with the images
    assert compute_ref_logps(model, groups, images=images) == len(groups)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    summary = train_round(model, groups, TrainSection(lr=1e-3, epochs=1), seed=0, images=images)
    assert summary["train_steps"] > 0 and summary["refused_steps"] == 0
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def _text_model():
    from tiny_models import tiny_qwen2
    return tiny_qwen2(0)
