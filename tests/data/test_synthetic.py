from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ipmn_lightning.data.synthetic import (
    FaceIdentity,
    FaceScene,
    SyntheticFaceSwapDataset,
    render_face,
    sample_identity,
    sample_scene,
    sample_triplet_params,
)

KEYS = ("protected", "replacement", "mask")


@pytest.mark.parametrize("size", [32, 64, 100])
def test_shapes_dtype_and_range(size: int) -> None:
    sample = SyntheticFaceSwapDataset(3, size, seed=1)[2]
    assert sample["index"] == 2
    for key in KEYS:
        img = sample[key]
        assert isinstance(img, torch.Tensor)
        assert img.shape == (3, size, size)
        assert img.dtype == torch.float32
        assert img.min() >= 0.0 and img.max() <= 1.0
        assert torch.isfinite(img).all()
        # not a flat image
        assert img.std() > 0.05


def test_same_arguments_give_identical_tensors() -> None:
    a = SyntheticFaceSwapDataset(5, 48, seed=3, split="val")[4]
    b = SyntheticFaceSwapDataset(5, 48, seed=3, split="val")[4]
    for key in KEYS:
        assert torch.equal(a[key], b[key])


def test_different_index_seed_or_split_differ() -> None:
    base = SyntheticFaceSwapDataset(4, 32, seed=0, split="train")[1]["protected"]
    others = [
        SyntheticFaceSwapDataset(4, 32, seed=0, split="train")[2]["protected"],
        SyntheticFaceSwapDataset(4, 32, seed=1, split="train")[1]["protected"],
        SyntheticFaceSwapDataset(4, 32, seed=0, split="val")[1]["protected"],
        SyntheticFaceSwapDataset(4, 32, seed=0, split="test")[1]["protected"],
    ]
    for other in others:
        assert not torch.equal(base, other)


def test_splits_use_distinct_streams() -> None:
    params = {split: sample_triplet_params(0, split, 0) for split in ("train", "val", "test")}
    assert params["train"] != params["val"] != params["test"] != params["train"]


def test_mask_is_the_true_face_swap() -> None:
    for index in range(3):
        id_a, scene_a, id_b, scene_b = sample_triplet_params(7, "train", index)
        assert id_a != id_b
        sample = SyntheticFaceSwapDataset(3, 40, seed=7)[index]
        assert torch.equal(sample["protected"], render_face(id_a, scene_a, 40))
        assert torch.equal(sample["replacement"], render_face(id_b, scene_b, 40))
        assert torch.equal(sample["mask"], render_face(id_b, scene_a, 40))


def test_swap_keeps_the_scene_and_changes_the_face() -> None:
    size = 64
    ds = SyntheticFaceSwapDataset(8, size, seed=11)
    corners = [(slice(0, 3), slice(0, 3)), (slice(0, 3), slice(-3, None))]
    corners += [(slice(-3, None), slice(0, 3)), (slice(-3, None), slice(-3, None))]
    centre = slice(size * 11 // 32, size * 21 // 32)
    for index in range(len(ds)):
        s = ds[index]
        protected, mask, replacement = s["protected"], s["mask"], s["replacement"]
        # Background and clothes in the corners belong to the scene: unchanged by the swap.
        for rows, cols in corners:
            assert torch.equal(mask[:, rows, cols], protected[:, rows, cols])
        # The face in the middle belongs to the identity: changed by the swap.
        assert (mask[:, centre, centre] - protected[:, centre, centre]).abs().mean() > 0.02
        assert (replacement - protected).abs().mean() > 0.02


def test_identity_and_scene_are_separate() -> None:
    rng = np.random.default_rng(0)
    ident, scene = sample_identity(rng), sample_scene(rng)
    assert isinstance(ident, FaceIdentity) and isinstance(scene, FaceScene)
    other_scene = sample_scene(rng)
    a, b = render_face(ident, scene, 32), render_face(ident, other_scene, 32)
    assert not torch.equal(a, b)


def test_sizes_render_the_same_picture() -> None:
    id_a, scene_a, _, _ = sample_triplet_params(0, "train", 3)
    small = render_face(id_a, scene_a, 32)
    large = F.avg_pool2d(render_face(id_a, scene_a, 64)[None], 2)[0]
    assert (small - large).abs().mean() < 0.02


def test_index_and_argument_errors() -> None:
    ds = SyntheticFaceSwapDataset(2, 32)
    assert torch.equal(ds[-1]["mask"], ds[1]["mask"])
    assert ds[-1]["index"] == 1
    with pytest.raises(IndexError):
        ds[2]
    with pytest.raises(ValueError, match="split"):
        SyntheticFaceSwapDataset(2, 32, split="dev")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seed"):
        SyntheticFaceSwapDataset(2, 32, seed=-1)
    with pytest.raises(ValueError, match="image_size"):
        render_face(*sample_triplet_params(0, "train", 0)[:2], image_size=4)


def test_pickle_roundtrip() -> None:
    ds = SyntheticFaceSwapDataset(3, 32, seed=5, split="test")
    clone = pickle.loads(pickle.dumps(ds))
    assert len(clone) == 3
    assert torch.equal(clone[2]["mask"], ds[2]["mask"])


def test_dataloader_workers_match_main_process() -> None:
    ds = SyntheticFaceSwapDataset(6, 32, seed=2)
    main = list(DataLoader(ds, batch_size=3, num_workers=0))
    workers = list(DataLoader(ds, batch_size=3, num_workers=2))
    assert len(main) == len(workers) == 2
    for a, b in zip(main, workers):
        assert torch.equal(a["index"], b["index"])
        for key in KEYS:
            assert a[key].shape == (3, 3, 32, 32)
            assert torch.equal(a[key], b[key])
