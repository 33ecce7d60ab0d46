"""Tests for magn_lib.data: the crop Dataset contract and its augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from magn_lib.crops import Crop, CropCache, LesionCrops, write_cache
from magn_lib.data import CropDataset
from magn_lib.errors import InputError

VIEWS = ("sagittal", "coronal", "axial")
S = 32


def lesion_arrays(n=6, seed=0, missing=None) -> dict[str, np.ndarray]:
    """A flat cache mapping whose images show the mask: 0.9 on the lesion, 0.1 around it, and
    channel-specific shading (0, 0.03, 0.06) so channel order is visible. The lesion is an
    asymmetric 'L' off the centre so flips and rotations are visible."""
    rng = np.random.default_rng(seed)
    lesions = []
    for row in range(n):
        crops = {}
        for view in VIEWS:
            mask = np.zeros((S, S), np.uint8)
            r, c = 8 + rng.integers(0, 4), 6 + rng.integers(0, 4)
            mask[r : r + 14, c : c + 5] = 1
            mask[r + 10 : r + 14, c : c + 14] = 1
            image = np.where(mask, 0.9, 0.1).astype(np.float32)[None].repeat(3, axis=0)
            image += np.array([0.0, 0.03, 0.06], np.float32)[:, None, None]
            crops[view] = None if (row, view) == missing else _crop(image, mask)
        lesions.append(LesionCrops(f"P{row:03d}-L1", f"P{row:03d}", row % 2, crops))
    cache = CropCache.from_lesions(lesions, views=VIEWS, crop_size=S)
    return cache.to_arrays()


def _crop(image, mask) -> Crop:
    return Crop(
        image=image,
        mask=mask,
        slice_index=3,
        slice_axis=2,
        centre_voxel=(1, 2, 3),
        clipped=False,
        mask_truncated=False,
        intensity_range=(0.0, 1.0),
    )


def test_contract_and_default_collate(tmp_path):
    arrays = lesion_arrays()
    path = write_cache(tmp_path / "crops.npz", CropCache.from_arrays(arrays))
    ds = CropDataset(path, views=["axial", "sagittal"], indices=[1, 4])
    assert len(ds) == 2 and ds.lesion_ids == ["P001-L1", "P004-L1"]
    item = ds[1]
    assert set(item) == {"images", "masks", "label", "lesion_id", "patient_id"}
    assert list(item["images"]) == ["axial", "sagittal"] and list(item["masks"]) == [
        "axial",
        "sagittal",
    ]
    assert (
        item["images"]["axial"].shape == (3, S, S)
        and item["images"]["axial"].dtype == torch.float32
    )
    assert item["masks"]["axial"].shape == (S, S) and item["masks"]["axial"].dtype == torch.float32
    assert item["label"].shape == () and item["label"].dtype == torch.float32
    assert item["label"].item() == 0.0 and item["lesion_id"] == "P004-L1"
    assert item["patient_id"] == "P004"
    batch = next(iter(DataLoader(ds, batch_size=2)))
    assert batch["images"]["sagittal"].shape == (2, 3, S, S)
    assert batch["masks"]["sagittal"].shape == (2, S, S)
    assert batch["label"].tolist() == [1.0, 0.0] and batch["lesion_id"] == ["P001-L1", "P004-L1"]


def test_without_augmentation_items_are_the_cache_values():
    arrays = lesion_arrays()
    ds = CropDataset(arrays, views=VIEWS)
    for i in range(len(ds)):
        item = ds[i]
        for view in VIEWS:
            assert torch.equal(item["images"][view], torch.from_numpy(arrays[f"image_{view}"][i]))
            expected_mask = torch.from_numpy(arrays[f"mask_{view}"][i].astype(np.float32))
            assert torch.equal(item["masks"][view], expected_mask)
    item["images"]["axial"].zero_()  # editing a sample leaves the cache alone
    assert ds[len(ds) - 1]["images"]["axial"].max() > 0.5


def test_augmentation_moves_image_and_mask_together():
    arrays = lesion_arrays()
    plain = CropDataset(arrays, views=VIEWS)
    aug = CropDataset(arrays, views=VIEWS, augment=True, seed=5)
    changed = 0
    for epoch in range(3):
        aug.set_epoch(epoch)
        for i in range(len(aug)):
            item, orig = aug[i], plain[i]
            for view in VIEWS:
                image, mask = item["images"][view], item["masks"][view]
                assert set(mask.unique().tolist()) <= {0.0, 1.0}
                assert 0.0 <= image.min() and image.max() <= 1.0
                lesion = image[1] > 0.5  # the bright L, wherever the augmentation put it
                iou = (lesion & (mask > 0)).sum() / (lesion | (mask > 0)).sum()
                assert iou > 0.9
                changed += not torch.equal(mask, orig["masks"][view])
    assert changed > 20


def test_mirror_is_left_right_in_every_view():
    """Rotation and jitter off: a mirrored lesion flips coronal/axial horizontally and swaps the
    sagittal neighbour slices; nothing flips vertically."""
    arrays = lesion_arrays()
    plain = CropDataset(arrays, views=VIEWS)
    aug = CropDataset(
        arrays,
        views=VIEWS,
        augment=True,
        seed=1,
        max_rotation=0.0,
        gamma_range=(1.0, 1.0),
        brightness_range=(1.0, 1.0),
    )
    seen = set()
    for i in range(len(aug)):
        item, orig = aug[i], plain[i]
        mirrored = not torch.equal(item["masks"]["axial"], orig["masks"]["axial"])
        seen.add(mirrored)
        sag = orig["images"]["sagittal"]
        if mirrored:
            for view in ("coronal", "axial"):
                assert torch.allclose(item["images"][view], orig["images"][view].flip(-1))
                assert torch.equal(item["masks"][view], orig["masks"][view].flip(-1))
            assert torch.allclose(item["images"]["sagittal"], sag.flip(0))
        else:
            assert torch.allclose(item["images"]["sagittal"], sag)
        assert torch.equal(item["masks"]["sagittal"], orig["masks"]["sagittal"])
    assert seen == {True, False}


def test_augmentation_is_reproducible_per_seed_epoch_and_lesion():
    arrays = lesion_arrays()

    def draw(seed, epoch, indices=None, i=0):
        ds = CropDataset(arrays, views=VIEWS, indices=indices, augment=True, seed=seed)
        ds.set_epoch(epoch)
        return ds[i]["images"]["coronal"]

    assert torch.equal(draw(3, 0), draw(3, 0))
    assert torch.equal(draw(3, 2, indices=[4, 2], i=1), draw(3, 2, indices=[2], i=0))
    assert not torch.equal(draw(3, 0), draw(3, 1))
    assert not torch.equal(draw(3, 0), draw(4, 0))


def test_missing_views_are_reported_not_dropped():
    arrays = lesion_arrays(missing=(2, "coronal"))
    with pytest.raises(InputError, match=r"P002-L1 \(coronal\)"):
        CropDataset(arrays, views=VIEWS)
    assert len(CropDataset(arrays, views=VIEWS, indices=[0, 1, 3])) == 3
    assert len(CropDataset(arrays, views=["sagittal"])) == 6
    with pytest.raises(InputError, match="holds views"):
        CropDataset(CropCache.from_arrays(arrays), views=["oblique"])


def test_dataset_factory_selects_lesions_and_augments_only_training_sets():
    from magn_lib.crops import CropCache
    from magn_lib.data import dataset_factory

    cache = CropCache.from_arrays(lesion_arrays())
    make = dataset_factory(cache, views=VIEWS, augment=True, seed=1)
    train = make(["P003-L1", "P001-L1"], train=True)
    test = make(["P003-L1", "P001-L1"], train=False)
    assert [train[i]["lesion_id"] for i in range(2)] == ["P003-L1", "P001-L1"]
    assert train.augment and not test.augment
    assert torch.equal(test[0]["images"]["axial"], torch.from_numpy(cache.image["axial"][3]))
    with pytest.raises(InputError, match="not in the crop cache: P999-L1"):
        make(["P999-L1"], train=False)
