"""A packed tree plus everything a model needs to run it: positions, images, attention mask kind."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from sport_fast.data.step_group import StepGroup
from sport_fast.model.introspect import decoder_of
from sport_fast.tree.pack import PackedTree, pack_step_groups
from sport_fast.model.vision import ImageInputs, image_token_id, mrope_context_positions, packed_pixel_values


@dataclass
class TreeBatch:
    tree: PackedTree
    pixel_values: torch.Tensor | None = None
    image_grid_thw: torch.Tensor | None = None


def make_tree_batch(model, groups: Sequence[StepGroup], *, candidates: str = "all",
                    images: ImageInputs | None = None, trie_impl: str = "auto") -> TreeBatch:
    """Pack ``groups`` for ``model``; a vision-language model also gets M-RoPE positions and pixels."""
    image_token = image_token_id(model.config)
    if image_token is None:
        return TreeBatch(pack_step_groups(groups, candidates=candidates, impl=trie_impl))
    has_images = any(g.images for g in groups)
    if has_images and images is None:
        raise ValueError("groups have images: pass images=ImageInputs(loader, processor)")
    rope_model = decoder_of(model)
    positions = [mrope_context_positions(rope_model, g.context_ids,
                                         [images.features(h)[1] for h in g.images] if g.images else [],
                                         image_token) for g in groups]
    tree = pack_step_groups(groups, candidates=candidates, image_token_id=image_token,
                            context_positions=positions, impl=trie_impl)
    if not tree.image_hashes:
        return TreeBatch(tree)
    return TreeBatch(tree, *packed_pixel_values(tree.image_hashes, images))
