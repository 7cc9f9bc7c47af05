"""What a vision-language policy sees of a task: its image files, shown in the first user turn.

Each image file of the task (by suffix, in the task's file order, at most ``max_images``) appears as
``Image <name>:`` and the Qwen2-VL block: vision start, one image pad per merged patch, vision end. The
pixels go to the sampler with the context. Exploration copies the files into the round's StepStore by
content hash, and the reference and training passes read those very bytes (``StepStore.image_inputs``).
A text-only policy gets no such block (``VisionPrompt.for_model`` returns None).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from sport_fast.model.vision import image_token_id
from sport_fast.tasks.task import is_image

@dataclass
class TaskImage:
    name: str
    path: Path
    pixel_values: torch.Tensor
    grid_thw: torch.Tensor


@dataclass
class VisionPrompt:
    processor: object           # the model's image processor
    merge: int                  # merged patches: grid cells per image token (spatial_merge_size ** 2)
    start: str
    pad: str
    end: str
    max_images: int = 4

    @classmethod
    def for_model(cls, model, tokenizer, processor, max_images: int = 4) -> "VisionPrompt | None":
        config = model.config
        token = image_token_id(config)
        if token is None:
            return None
        if processor is None:
            raise ValueError(f"{type(model).__name__} reads images: it needs its image processor")
        start, pad, end = tokenizer.convert_ids_to_tokens(
            [config.vision_start_token_id, token, config.vision_end_token_id])
        return cls(processor, config.vision_config.spatial_merge_size ** 2, start, pad, end, max_images)

    def images(self, task) -> list[TaskImage]:
        """The task's image files, processed (a corrupt image is refused by name)."""
        from PIL import Image
        shown = []
        for name, path in task.files.items():
            if not is_image(name) or len(shown) == self.max_images:
                continue
            try:
                with Image.open(path) as im:
                    out = self.processor(images=[im.convert("RGB")], return_tensors="pt")
            except OSError as err:
                raise ValueError(f"task {task.id}: image {name} cannot be read ({err})") from None
            shown.append(TaskImage(name, Path(path), out["pixel_values"], out["image_grid_thw"][0]))
        return shown

    def block(self, images: list[TaskImage]) -> str:
        """The text that stands for ``images`` in the user turn."""
        return "".join(f"Image {im.name}: {self.start}{self.pad * (int(im.grid_thw.prod()) // self.merge)}"
                       f"{self.end}\n" for im in images)
