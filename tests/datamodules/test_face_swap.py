import shutil

import pytest
import torch

from ipmn_lightning.data import MaskStoreError
from ipmn_lightning.datamodules.face_swap import FaceSwapDataModule


class FakeTrainer:
    training = True


def first_batch(dm: FaceSwapDataModule, split: str = "train") -> dict:
    dm.prepare_data()
    dm.setup("fit")
    loader = dm.train_dataloader() if split == "train" else dm.val_dataloader()
    return next(iter(loader))


def check_batch(batch: dict, size: int, batch_size: int) -> None:
    for key in ("protected", "replacement", "mask"):
        assert batch[key].shape == (batch_size, 3, size, size)
        assert batch[key].dtype == torch.float32
        assert 0 <= batch[key].min() and batch[key].max() <= 1
    assert batch["index"].shape == (batch_size,)


def test_synthetic_batches():
    dm = FaceSwapDataModule(image_size=32, batch_size=4, num_workers=0, synthetic_sizes=(8, 4, 4))
    check_batch(first_batch(dm), 32, 4)
    check_batch(first_batch(dm, "val"), 32, 4)


def test_synthetic_val_is_deterministic_and_differs_from_train():
    a = first_batch(FaceSwapDataModule(image_size=32, batch_size=2, num_workers=0, synthetic_sizes=(4, 2, 2)), "val")
    b = first_batch(FaceSwapDataModule(image_size=32, batch_size=2, num_workers=0, synthetic_sizes=(4, 2, 2)), "val")
    assert torch.equal(a["protected"], b["protected"])
    dm = FaceSwapDataModule(image_size=32, batch_size=2, num_workers=0, synthetic_sizes=(4, 2, 2))
    dm.setup("fit")
    assert not torch.equal(dm.dataset("train")[0]["protected"], dm.dataset("val")[0]["protected"])


def test_paired_flip_flips_the_whole_triple():
    dm = FaceSwapDataModule(image_size=32, batch_size=8, num_workers=0, synthetic_sizes=(8, 4, 4))
    batch = first_batch(dm)
    original = {k: batch[k].clone() for k in ("protected", "replacement", "mask")}
    dm.trainer = FakeTrainer()
    torch.manual_seed(3)
    flipped = dm.on_after_batch_transfer({k: v.clone() for k, v in batch.items()}, 0)
    changed = [i for i in range(8) if not torch.equal(flipped["protected"][i], original["protected"][i])]
    assert changed and len(changed) < 8
    for i in range(8):
        is_flipped = i in changed
        for key in ("protected", "replacement", "mask"):
            expected = original[key][i].flip(-1) if is_flipped else original[key][i]
            assert torch.equal(flipped[key][i], expected)


def test_celeba_source(fake_celeba):
    dm = FaceSwapDataModule(source="celeba", root=str(fake_celeba), image_size=32, batch_size=2, num_workers=0)
    check_batch(first_batch(dm), 32, 2)


def test_folder_source(fake_folder):
    dm = FaceSwapDataModule(source="folder", root=str(fake_folder), image_size=32, batch_size=2, num_workers=0)
    check_batch(first_batch(dm), 32, 2)


def test_real_source_needs_root():
    with pytest.raises(ValueError, match=r"data\.root"):
        FaceSwapDataModule(source="celeba")


def test_missing_store_is_a_clear_error_before_training(tmp_path, fake_celeba):
    root = tmp_path / "celeba"
    shutil.copytree(fake_celeba, root)
    shutil.rmtree(root / "masks_store")
    dm = FaceSwapDataModule(source="celeba", root=str(root), image_size=32, num_workers=0)
    with pytest.raises(MaskStoreError, match=r"ipmn masks pairs"):
        dm.prepare_data()


def test_mismatched_store_lists_problems_before_training(tmp_path, fake_celeba):
    root = tmp_path / "celeba"
    shutil.copytree(fake_celeba, root)
    masks = sorted((root / "masks_store" / "masks").glob("*.png"))
    masks[0].unlink()
    masks[1].write_bytes(b"not an image")
    dm = FaceSwapDataModule(source="celeba", root=str(root), image_size=32, num_workers=0)
    with pytest.raises(MaskStoreError) as info:
        dm.prepare_data()
    message = str(info.value)
    assert masks[0].name in message and masks[1].name in message


def test_worker_loading_matches_main_process():
    a = first_batch(FaceSwapDataModule(image_size=32, batch_size=2, num_workers=0, synthetic_sizes=(4, 2, 2)), "val")
    b = first_batch(FaceSwapDataModule(image_size=32, batch_size=2, num_workers=2, synthetic_sizes=(4, 2, 2)), "val")
    assert torch.equal(a["mask"], b["mask"])
