"""Images for Qwen2-VL-class models in a packed tree: pixel values once per packed image, M-RoPE positions.

Each distinct image is run through the image processor once (cached by content hash). A packed batch
holds one copy of an image per packed occurrence (usually one: shared contexts are packed once), and
the model's vision encoder sees exactly those, in packed order.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch


@dataclass
class ImageInputs:
    """loader(hash) -> PIL image (e.g. from a StepStore); processor: the model's image processor."""
    loader: Callable[[str], object]
    processor: object
    _cache: dict = field(default_factory=dict, repr=False)

    def features(self, image_hash: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(pixel_values (patches, D), grid_thw (3,)) of one image, computed once."""
        if image_hash not in self._cache:
            out = self.processor(images=[self.loader(image_hash)], return_tensors="pt")
            self._cache[image_hash] = (out["pixel_values"], out["image_grid_thw"][0])
        return self._cache[image_hash]


def image_token_id(model_config) -> int | None:
    """The image placeholder token of a vision-language config, None for a text-only model."""
    if getattr(model_config, "vision_config", None) is None:
        return None
    return getattr(model_config, "image_token_id", None)


def mrope_context_positions(rope_model, context_ids: list[int], grids: list[torch.Tensor],
                            image_token: int) -> np.ndarray:
    """(3, len(context)) M-RoPE positions, computed by the model's own ``get_rope_index``."""
    ids = torch.tensor([context_ids], dtype=torch.long)
    grid = torch.stack(grids) if grids else None
    positions, _ = rope_model.get_rope_index(input_ids=ids, mm_token_type_ids=(ids == image_token).int(),
                                             image_grid_thw=grid)
    return positions[:, 0].numpy()


def check_images(model_config, context_ids: list[int], images) -> None:
    """Refuse a context whose image placeholders do not match ``images`` (pixel_values, grid_thw) pairs."""
    token = image_token_id(model_config)
    if token is None:
        if images:
            raise ValueError("images were given, but the model has no vision encoder")
        return
    merge = model_config.vision_config.spatial_merge_size ** 2
    want = sum(int(grid.prod()) // merge for _, grid in images)
    have = sum(t == token for t in context_ids)
    if want != have:
        raise ValueError(f"the context has {have} image placeholder tokens, its {len(images)} image(s) need {want}")


def context_positions(model, context_ids: list[int], images) -> tuple[torch.Tensor, int]:
    """((3, len) M-RoPE positions of an image-bearing context, delta of the text positions after it)."""
    from sport_fast.model.introspect import decoder_of
    token = image_token_id(model.config)
    positions = torch.as_tensor(mrope_context_positions(decoder_of(model), context_ids,
                                                        [g for _, g in images], token))
    return positions, int(positions.max()) + 1 - len(context_ids)


def packed_pixel_values(image_hashes: list[str], images: ImageInputs) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenated pixel values and (n, 3) grids for the packed image runs, in packed order."""
    feats = [images.features(h) for h in image_hashes]
    return torch.cat([f[0] for f in feats]), torch.stack([f[1] for f in feats])
