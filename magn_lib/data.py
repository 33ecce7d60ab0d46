"""A torch ``Dataset`` over the crop cache, with optional, reproducible augmentation.

Each item is ``{"images": {view: FloatTensor[3, S, S]}, "masks": {view: FloatTensor[S, S]},
"label": FloatTensor[] (1.0 = multiple myeloma), "lesion_id": str, "patient_id": str}``; the
default ``torch.utils.data.default_collate`` batches it into ``images[view]: [B, 3, S, S]``,
``masks[view]: [B, S, S]``, ``label: [B]`` and lists of ids.

Augmentation (small, as the paper's training on 269 lesions needs; Chen et al. 2022 do not
specify theirs) is applied with ``torchvision.transforms.v2.functional`` to each view's image
and mask together, so the mask stays on the lesion:

- rotation by a uniform angle in ±``max_rotation`` degrees about the crop centre, drawn per view
  (bilinear for the image, nearest for the mask, zero fill as the crop padding);
- a left-right mirror of the patient, drawn once per lesion and applied to every view
  consistently: coronal and axial crops flip horizontally (their columns run to the patient's
  left, see :mod:`magn_lib.crops`), sagittal crops reverse their channel order (the neighbour
  slices swap sides) and keep their in-plane image. No flip ever swaps cranial and caudal or
  anterior and posterior, which are not symmetric in the spine;
- intensity jitter of the image only: gamma in ``gamma_range`` (log-uniform) then brightness
  factor in ``brightness_range``, clamped to [0, 1].

Random draws come from ``numpy.random.default_rng((seed, epoch, cache row))``: the same
seed, epoch and lesion give the same sample in any worker process and any index subset.
Call :meth:`CropDataset.set_epoch` at the start of each epoch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from magn_lib.crops import CropCache, read_cache
from magn_lib.errors import InputError

__all__ = ["CropDataset", "dataset_factory"]


class CropDataset(Dataset):
    """Lesions of a crop cache as training samples.

    Args:
        cache_path_or_arrays: the cache file (:func:`magn_lib.crops.write_cache`), a loaded
            :class:`~magn_lib.crops.CropCache`, or the flat ``{key: array}`` mapping of its
            ``.npz`` (:meth:`~magn_lib.crops.CropCache.to_arrays`).
        views: the views each sample carries (a subset of the cache's, in this order).
        indices: the cache rows to use (e.g. one fold's training lesions); default all.
        augment: apply the random augmentation described in the module docstring.
        seed: seed of the augmentation draws.
        max_rotation: largest rotation in degrees.
        gamma_range, brightness_range: intensity jitter ranges; (1, 1) turns one off.

    Raises:
        InputError: a requested view is not in the cache, or a selected lesion has no crop in
            a requested view (listed by lesion id; leave those lesions out through ``indices``).
    """

    def __init__(
        self,
        cache_path_or_arrays: str | os.PathLike[str] | CropCache | Mapping[str, Any],
        *,
        views: Sequence[str],
        indices: Sequence[int] | np.ndarray | None = None,
        augment: bool = False,
        seed: int = 0,
        max_rotation: float = 10.0,
        gamma_range: tuple[float, float] = (0.8, 1.25),
        brightness_range: tuple[float, float] = (0.9, 1.1),
    ) -> None:
        source = cache_path_or_arrays
        if isinstance(source, CropCache):
            cache = source
        elif isinstance(source, Mapping):
            cache = CropCache.from_arrays(source)
        else:
            cache = read_cache(source)
        self.cache = cache
        self.views = tuple(views)
        unknown = [v for v in self.views if v not in cache.views]
        if not self.views or unknown:
            raise InputError(
                f"the crop cache holds views {list(cache.views)}, not {unknown or 'none'}",
                hint="rebuild the crop cache with the profile's views",
            )
        rows = np.arange(len(cache)) if indices is None else np.asarray(indices, dtype=np.int64)
        if rows.ndim != 1 or (len(rows) and (rows.min() < 0 or rows.max() >= len(cache))):
            raise IndexError(f"indices must be cache rows in [0, {len(cache)})")
        missing = [
            f"{cache.lesion_id[r]} ({view})"
            for r in rows
            for view in self.views
            if not cache.present[view][r]
        ]
        if missing:
            raise InputError(
                f"{len(missing)} selected lesion views have no crop: {', '.join(missing[:20])}"
                + (" ..." if len(missing) > 20 else ""),
                hint="leave these lesions out through indices (see the annotation-transfer QC)",
            )
        self.rows = rows
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0
        self.max_rotation = float(max_rotation)
        self.gamma_range = (float(gamma_range[0]), float(gamma_range[1]))
        self.brightness_range = (float(brightness_range[0]), float(brightness_range[1]))

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of this epoch (call before iterating)."""
        self.epoch = int(epoch)

    @property
    def labels(self) -> np.ndarray:
        """int8 [len(self)] labels of the selected lesions (1 = multiple myeloma)."""
        return self.cache.label[self.rows]

    @property
    def lesion_ids(self) -> list[str]:
        return [str(x) for x in self.cache.lesion_id[self.rows]]

    @property
    def patient_ids(self) -> list[str]:
        return [str(x) for x in self.cache.patient_id[self.rows]]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = int(self.rows[index])
        images = {v: torch.from_numpy(self.cache.image[v][row].copy()) for v in self.views}
        masks = {
            v: torch.from_numpy(self.cache.mask[v][row].astype(np.float32)) for v in self.views
        }
        if self.augment:
            images, masks = self._augmented(row, images, masks)
        return {
            "images": images,
            "masks": masks,
            "label": torch.tensor(float(self.cache.label[row]), dtype=torch.float32),
            "lesion_id": str(self.cache.lesion_id[row]),
            "patient_id": str(self.cache.patient_id[row]),
        }

    def _augmented(
        self, row: int, images: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        rng = np.random.default_rng((self.seed, self.epoch, row))
        mirror = bool(rng.random() < 0.5)
        out_images, out_masks = {}, {}
        # Draw every view's parameters (in the cache's view order) whatever views are used, so
        # a view's augmentation does not depend on which other views were requested.
        draws = {
            view: (
                rng.uniform(-self.max_rotation, self.max_rotation),
                math.exp(rng.uniform(*np.log(self.gamma_range))),
                rng.uniform(*self.brightness_range),
            )
            for view in self.cache.views
        }
        for view in self.views:
            angle, gamma, brightness = draws[view]
            image = tv_tensors.Image(images[view])
            mask = tv_tensors.Mask(masks[view][None])
            if mirror and view == "sagittal":
                image = tv_tensors.Image(image.flip(0))
            elif mirror:
                image, mask = F.horizontal_flip(image), F.horizontal_flip(mask)
            if angle:
                image = F.rotate(image, angle, interpolation=F.InterpolationMode.BILINEAR)
                mask = F.rotate(mask, angle, interpolation=F.InterpolationMode.NEAREST)
            image = F.adjust_gamma(image, gamma)
            image = F.adjust_brightness(image, brightness)
            out_images[view] = image.as_subclass(torch.Tensor).clamp(0.0, 1.0).contiguous()
            out_masks[view] = mask.as_subclass(torch.Tensor)[0].contiguous()
        return out_images, out_masks


def dataset_factory(
    cache: str | os.PathLike[str] | CropCache,
    *,
    views: Sequence[str],
    augment: bool,
    seed: int,
) -> Callable[..., CropDataset]:
    """``make(lesion_ids, *, train) -> CropDataset`` over one crop cache, as the
    cross-validation grid (:func:`magn_lib.cv.run_grid`) asks for: exactly those lesions,
    augmented when ``train`` and ``augment``."""
    cache = cache if isinstance(cache, CropCache) else read_cache(cache)
    row_of = {str(lesion_id): row for row, lesion_id in enumerate(cache.lesion_id)}

    def make(lesion_ids: Sequence[str], *, train: bool) -> CropDataset:
        unknown = [i for i in lesion_ids if str(i) not in row_of]
        if unknown:
            raise InputError(f"lesions not in the crop cache: {', '.join(unknown[:10])}",
                             hint="rebuild the crop cache (notebook 02) for this fold table")
        return CropDataset(cache, views=views, indices=[row_of[str(i)] for i in lesion_ids],
                           augment=augment and train, seed=seed)

    return make
