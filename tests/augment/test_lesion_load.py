"""Lesion loads and the target-load distributions of LesionMix."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from factories import make_case, write_case

from napari_lesionmix.augment.lesion_load import (
    DISTRIBUTIONS,
    LoadDistribution,
    dataset_loads,
    from_dataset,
    lesion_load_ml,
)
from napari_lesionmix.errors import LesionMixError

LOADS = {f"c{i}": float(v) for i, v in enumerate([0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 34.0])}


def test_load_is_voxel_count_times_voxel_volume():
    lab = np.zeros((10, 10, 10), np.uint8)
    lab[2:5, 2:4, 1:6] = 1  # 30 voxels
    lab[7, 7, 7] = 2  # any class counts
    assert lesion_load_ml(lab, (1.2, 1.0, 1.5)) == pytest.approx(31 * 1.8 / 1000)


def test_dataset_loads_reads_labels(tmp_path):
    cases = [make_case(seed=s, case_id=f"c{s}") for s in range(2)]
    for c in cases:
        write_case(c, tmp_path)
    loads = dataset_loads(tmp_path)
    assert set(loads) == {"c0", "c1"}
    for c in cases:
        assert loads[c.case_id] == pytest.approx(lesion_load_ml(c.label, c.spacing))


@pytest.mark.parametrize("name, lo, hi", [("low", 0.5, 1 / 3), ("medium", 1 / 3, 2 / 3), ("high", 2 / 3, 1.0)])
def test_terciles_bound_the_draws(name, lo, hi):
    values = np.array(list(LOADS.values()))
    d = LoadDistribution.from_dataset(LOADS, name)
    q_lo = values.min() if lo == 0.5 else np.quantile(values, lo)
    assert d.low == pytest.approx(q_lo) and d.high == pytest.approx(np.quantile(values, hi))
    rng = np.random.default_rng(0)
    draws = np.array([d.sample(rng) for _ in range(500)])
    assert draws.min() >= d.low and draws.max() <= d.high
    assert draws.max() - draws.min() > 0.8 * (d.high - d.low)  # spread over the band


def test_uniform_gaussian_real_defaults_and_draws():
    values = np.array(list(LOADS.values()))
    rng = np.random.default_rng(1)
    u = LoadDistribution.from_dataset(LOADS, "uniform")
    assert (u.low, u.high) == (values.min(), values.max())
    g = LoadDistribution.from_dataset(LOADS, "gaussian")
    assert g.mean == pytest.approx(values.mean()) and g.sd == pytest.approx(values.std(ddof=1))
    gd = np.array([g.sample(rng) for _ in range(2000)])
    assert gd.min() >= 0  # truncated at 0
    r = LoadDistribution.from_dataset(LOADS, "real")
    rd = {r.sample(rng) for _ in range(300)}
    assert rd == set(values)


def test_every_parameter_is_editable():
    d = from_dataset(LOADS, "gaussian", mean=10.0, sd=2.0)
    assert (d.mean, d.sd) == (10.0, 2.0)
    d2 = d.replace(sd=0.0)
    assert d2.sample(np.random.default_rng(0)) == 10.0
    u = LoadDistribution.from_dataset(LOADS, "high", low=40.0, high=50.0)
    assert 40.0 <= u.sample(np.random.default_rng(0)) <= 50.0


@pytest.mark.parametrize("name", DISTRIBUTIONS)
def test_histogram_data_for_the_ui(name):
    d = LoadDistribution.from_dataset(LOADS, name)
    h = d.histogram(bins=40)
    assert h.edges.shape == (41,) and h.density.shape == (40,) and h.dataset_counts.shape == (40,)
    assert h.dataset_counts.sum() == len(LOADS)
    assert (h.density >= 0).all()
    mass = float((h.density * np.diff(h.edges)).sum())
    assert mass == pytest.approx(1.0, abs=1e-3)
    assert h.centers.shape == (40,)


def test_histogram_mass_matches_draws():
    d = LoadDistribution.from_dataset(LOADS, "gaussian")
    h = d.histogram(bins=10)
    rng = np.random.default_rng(3)
    draws = np.array([d.sample(rng) for _ in range(4000)])
    counts = np.histogram(draws, h.edges)[0] / 4000
    np.testing.assert_allclose(counts, h.density * np.diff(h.edges), atol=0.03)


def test_bad_distribution_input_errors():
    with pytest.raises(LesionMixError, match="Unknown load distribution 'huge'"):
        LoadDistribution.from_dataset(LOADS, "huge")
    with pytest.raises(LesionMixError, match="low <= high"):
        LoadDistribution.from_dataset(LOADS, "uniform", low=5.0, high=1.0)
    with pytest.raises(LesionMixError, match="sd >= 0"):
        LoadDistribution("gaussian", mean=1.0, sd=-1.0)
    with pytest.raises(LesionMixError, match="no cases"):
        LoadDistribution.from_dataset({}, "real")
    with pytest.raises(LesionMixError, match="Unknown load distribution parameter"):
        LoadDistribution.from_dataset(LOADS, "low", shape=2.0)
    with pytest.raises(LesionMixError, match="needs the dataset's loads"):
        LoadDistribution("real")
    with pytest.raises(dataclasses.FrozenInstanceError):
        LoadDistribution.from_dataset(LOADS, "low").low = 3.0  # type: ignore[misc]
