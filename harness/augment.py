"""Training-time augmentation of a recipe, with ``torchvision.transforms.v2``.

Applied by :func:`prunebench.harness.train.train_model` to each training batch and nowhere else
(accuracy, calibration and timing see the images as loaded). The batches are already normalised
per channel, so padding is filled with the value a black pixel has after normalisation
(``TensorImageDataset.fill_value``), as padding the raw image with black would. Each image of a
batch gets its own random parameters, drawn from the augmenter's own seeded random stream so
that augmentation neither reads nor moves the global RNG the model and dropout use, and the
same seed gives the same crops on the CPU and on a GPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from prunebench.harness.errors import PrunebenchError

# ``recipe`` below is a prunebench.harness.train.Recipe (train.py imports this module)


class Augmenter:
    """Per-image random crop / resized crop / horizontal flip of ``(N, C, H, W)`` batches."""

    def __init__(self, transform: object, seed: int) -> None:
        self.transform = transform
        self._state = torch.Generator().manual_seed(seed).get_state()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The batch with every image augmented (same shape, device and dtype)."""
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self._state)
            out = torch.stack([self.transform(img) for img in x])  # type: ignore[operator]
            self._state = torch.get_rng_state()
        return out


def describe(recipe: Any) -> list[str]:
    """The recipe's training augmentations, in the order applied (empty: none)."""
    steps = []
    if recipe.resized_crop_min_scale > 0:
        steps.append(f"random-resized crop (scale {recipe.resized_crop_min_scale:g}-1)")
    if recipe.crop_padding > 0:
        steps.append(f"random crop, {recipe.crop_padding}-px padding")
    if recipe.hflip:
        steps.append("horizontal flip")
    if recipe.shift > 0:
        steps.append(f"random shift up to {recipe.shift} px")
    return steps


def build_augmenter(recipe: Any, image_hw: Sequence[int], fill: Sequence[float] | None,
                    ) -> Augmenter | None:
    """The :class:`Augmenter` of ``recipe`` for images of ``image_hw`` (``None``: the recipe
    has no v2 augmentation). ``fill`` is the per-channel value of a black pixel after
    normalisation; a recipe that pads needs it."""
    from torchvision.transforms import v2

    size = (int(image_hw[0]), int(image_hw[1]))
    steps: list[object] = []
    if recipe.resized_crop_min_scale > 0:
        steps.append(v2.RandomResizedCrop(size, scale=(recipe.resized_crop_min_scale, 1.0),
                                          antialias=True))
    if recipe.crop_padding > 0:
        if fill is None:
            raise PrunebenchError(f"recipe {recipe.name!r} pads crops (crop_padding="
                                  f"{recipe.crop_padding}) but the training data set does not "
                                  "say which value a black pixel has; use a registered data set")
        steps.append(v2.RandomCrop(size, padding=recipe.crop_padding, fill=list(fill)))
    if recipe.hflip:
        steps.append(v2.RandomHorizontalFlip(0.5))
    if not steps:
        return None
    return Augmenter(v2.Compose(steps), recipe.seed + 2)
