"""The P x K sampler: every batch holds exactly P classes with exactly K items each."""

from collections import Counter

import numpy as np
import pytest

from training.sampler import PKSampler

CLASSES = np.repeat([0, 1, 2, 3], [50, 7, 3, 20])  # class 2 has fewer than K items


def test_every_batch_holds_p_classes_with_k_items_of_their_own_class():
    sampler = PKSampler(CLASSES, p=3, k=4, batches=40, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 40
    for batch in batches:
        counts = Counter(CLASSES[batch].tolist())
        assert len(batch) == 12 and len(counts) == 3 and set(counts.values()) == {4}
        for c in counts:
            items = [i for i in batch if CLASSES[i] == c]
            if c != 2:  # a class with >= K items never repeats an item within a batch
                assert len(set(items)) == 4


def test_all_classes_appear_and_large_classes_are_used_without_replacement_within_a_pass():
    sampler = PKSampler(CLASSES, p=2, k=5, batches=200, seed=1)
    seen_class0: list[int] = []
    classes_seen = set()
    for batch in sampler:
        classes_seen |= set(CLASSES[batch].tolist())
        seen_class0 += [i for i in batch if CLASSES[i] == 0]
    assert classes_seen == {0, 1, 2, 3}
    first_pass = seen_class0[:50]  # class 0 has 50 items = 10 draws of K = 5
    assert sorted(first_pass) == list(range(50))


def test_batches_depend_on_seed_and_epoch_only():
    a, b = PKSampler(CLASSES, 2, 4, 10, seed=3), PKSampler(CLASSES, 2, 4, 10, seed=3)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)


def test_asking_for_more_classes_than_exist_is_an_error():
    with pytest.raises(ValueError, match="only 4 classes"):
        PKSampler(CLASSES, p=5, k=2, batches=1)
