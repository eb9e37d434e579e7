"""Reading in threads: results in order, the first error in order, a bounded window, the same bank."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from factories import make_case, write_case

from napari_lesionmix.augment.lesion_load import dataset_loads
from napari_lesionmix.augment.lesions import LesionBank
from napari_lesionmix.augment.likelihood import likelihood_map
from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.io import threads as threads_module
from napari_lesionmix.io.threads import map_in_threads

SHAPE = (24, 26, 20)


def test_results_come_in_order_whatever_finishes_first():
    def slow_first(i):
        time.sleep(0.02 if i % 3 == 0 else 0.0)
        return i * i

    for n in (1, 2, 4):
        assert list(map_in_threads(slow_first, range(20), threads=n)) == [i * i for i in range(20)]


def test_the_first_error_in_order_is_raised_after_the_items_before_it():
    def fail(i):
        if i in (3, 7):
            time.sleep(0.05 if i == 3 else 0.0)  # item 7 fails first in time, item 3 first in order
            raise ValueError(f"item {i}")
        return i

    got = []
    with pytest.raises(ValueError, match="item 3"):
        for v in map_in_threads(fail, range(10), threads=4):
            got.append(v)
    assert got == [0, 1, 2]


def test_at_most_twice_the_threads_wait_to_be_consumed_and_stopping_cancels_the_rest():
    started = []
    lock = threading.Lock()

    def work(i):
        with lock:
            started.append(i)
        return i

    gen = map_in_threads(work, range(100), threads=2)
    assert next(gen) == 0
    time.sleep(0.05)
    assert len(started) <= 5  # 4 submitted ahead, then one more for the one consumed
    gen.close()
    n = len(started)
    time.sleep(0.05)
    assert len(started) == n <= 6


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("threads")
    cases = [make_case(seed=s, n_lesions=2 + s % 3, case_id=f"t{s}", shape=SHAPE) for s in range(7)]
    for c in cases:
        write_case(c, root)
    return root


def test_a_bank_loads_and_map_are_the_same_with_one_thread_or_four(dataset, monkeypatch):
    def build():
        bank = LesionBank.from_dataset(dataset)
        lesions = bank.all_lesions()
        return bank.loads(), [(les.case_id, les.index, les.box, les.volume_ml, les.centroid_mm) for les in lesions], \
            [les.mask for les in lesions], [les.image for les in lesions], dataset_loads(dataset), \
            likelihood_map(dataset).values

    monkeypatch.setattr(threads_module, "read_threads", lambda: 4)
    four = build()
    monkeypatch.setattr(threads_module, "read_threads", lambda: 1)
    one = build()
    assert four[0] == one[0] and four[1] == one[1] and four[4] == one[4]
    for a, b in zip(four[2] + four[3], one[2] + one[3], strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(four[5], one[5])


def test_a_bank_reports_the_first_broken_label_in_case_order(tmp_path, monkeypatch):
    for s in range(6):
        write_case(make_case(seed=s, n_lesions=2, case_id=f"b{s}", shape=SHAPE), tmp_path)
    for s in (1, 4):
        (tmp_path / f"b{s}_seg.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    for n in (1, 4):
        monkeypatch.setattr(threads_module, "read_threads", lambda n=n: n)
        bank = LesionBank.from_dataset(tmp_path)
        with pytest.raises(LesionMixError, match=r"b1_seg.nii.gz"):
            bank.all_lesions()
        assert set(bank._lesions) == {"b0"}  # the cases before it were kept
