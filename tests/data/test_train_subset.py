"""Training on a subset of the data (issue 16): `train_fraction` / `train_limit` of FaceSwapDataModule."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DistributedSampler, Subset

from ipmn_lightning.datamodules.face_swap import FaceSwapDataModule


def make(**kwargs: object) -> FaceSwapDataModule:
    defaults = dict(image_size=16, batch_size=2, num_workers=0, synthetic_sizes=(40, 6, 5), seed=0)
    return FaceSwapDataModule(**{**defaults, **kwargs})


def train_indices(dm: FaceSwapDataModule) -> list[int]:
    dm.setup("fit")
    dataset = dm.dataset("train")
    return list(dataset.indices) if isinstance(dataset, Subset) else list(range(len(dataset)))


def test_full_training_split_by_default():
    dm = make()
    assert train_indices(dm) == list(range(40))
    assert not isinstance(dm.dataset("train"), Subset)


@pytest.mark.parametrize(
    ("kwargs", "size"),
    [({"train_fraction": 0.25}, 10), ({"train_limit": 7}, 7), ({"train_fraction": 0.5, "train_limit": 7}, 7),
     ({"train_fraction": 0.1, "train_limit": 7}, 4), ({"train_limit": 1000}, 40), ({"train_fraction": 0.001}, 1)],
)  # fmt: skip
def test_subset_size(kwargs, size):
    indices = train_indices(make(**kwargs))
    assert len(indices) == size == len(set(indices))
    assert indices == sorted(indices) and all(0 <= i < 40 for i in indices)


def test_subset_is_deterministic_and_independent_of_the_global_random_state():
    """Every DDP rank (each with its own random stream, see ExactResume) and every resume draws the same subset."""
    torch.manual_seed(1)
    first = train_indices(make(train_limit=8))
    torch.manual_seed(2)  # another rank's / a resumed run's global state
    torch.rand(100)
    assert train_indices(make(train_limit=8)) == first
    assert train_indices(make(train_limit=8, seed=1)) != first  # the seed chooses it


def test_smaller_limits_give_nested_subsets():
    """With one seed, a later phase's smaller subset lies inside an earlier phase's larger one."""
    assert set(train_indices(make(train_limit=5))) <= set(train_indices(make(train_limit=12)))


def test_ranks_split_the_subset_between_them():
    dm = make(train_limit=9)
    dm.setup("fit")
    subset = dm.dataset("train")
    shares = [list(DistributedSampler(subset, num_replicas=2, rank=r, shuffle=True, seed=0)) for r in (0, 1)]
    seen = {subset.indices[i] for share in shares for i in share}
    assert seen == set(subset.indices)  # together the ranks cover the subset (9 -> 5 + 5, one repeated)


def test_validation_and_test_splits_are_not_reduced():
    dm = make(train_fraction=0.1)
    dm.setup("fit")
    assert len(dm.dataset("val")) == 6 and len(dm.dataset("test")) == 5


def test_training_batches_come_from_the_subset():
    dm = make(train_limit=4, batch_size=2)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert len(loader) == 2
    items = {int(i) for batch in loader for i in batch["index"]}
    assert len(items) == 4


@pytest.mark.parametrize(("kwargs", "match"), [({"train_fraction": 0.0}, "train_fraction"),
                                               ({"train_fraction": 1.5}, "train_fraction"),
                                               ({"train_limit": 0}, "train_limit")])  # fmt: skip
def test_bad_values_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make(**kwargs)


def test_owner_and_attacker_parts_are_disjoint_and_cover_the_training_split():
    owner = train_indices(make(train_part="owner", attacker_fraction=0.25))
    attacker = train_indices(make(train_part="attacker", attacker_fraction=0.25))
    assert len(owner) == 30 and len(attacker) == 10
    assert not set(owner) & set(attacker) and sorted(owner + attacker) == list(range(40))
    # the limit reduces each part inside it: the attacker never sees an owner image
    limited = train_indices(make(train_part="owner", attacker_fraction=0.25, train_limit=12))
    assert len(limited) == 12 and set(limited) <= set(owner)
    assert train_indices(make(train_part="attacker", attacker_fraction=0.25, train_fraction=0.5)) != attacker
    assert set(train_indices(make(train_part="attacker", attacker_fraction=0.25, train_fraction=0.5))) <= set(attacker)


def test_attacker_fraction_is_checked():
    with pytest.raises(ValueError, match="attacker_fraction"):
        make(train_part="attacker", attacker_fraction=1.0)
