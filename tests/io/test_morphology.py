"""connected_components: scipy.ndimage.label's numbers, computed by cc3d."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_lesionmix.io.morphology import connected_components


def _reference(mask, rank):
    return ndi.label(mask, structure=ndi.generate_binary_structure(mask.ndim, rank))


def _masks(rng, ndim, count):
    """Random masks: sparse and dense, speckled and blobby, C- and Fortran-ordered, strided views."""
    for i in range(count):
        shape = tuple(int(v) for v in rng.integers(1, 24, ndim))
        m = rng.random(shape) < rng.uniform(0.01, 0.7)
        if i % 3 == 1:
            m = ndi.gaussian_filter(m.astype(float), 1.0) > 0.3
        if i % 4 == 1:
            m = np.asfortranarray(m)  # cc3d alone would number it in Fortran order
        elif i % 4 == 2:
            m = m[::-1, ::2]  # a view with negative and step-2 strides
        elif i % 4 == 3:
            m = m.astype(rng.choice([np.uint8, np.float32, np.int16])) * 3  # nonzero, not bool
        yield m


@pytest.mark.parametrize("ndim,rank", [(3, 1), (3, 2), (3, 3), (2, 1), (2, 2)])
def test_connected_components_are_ndimage_labels_number_for_number(ndim, rank):
    rng = np.random.default_rng(10 * ndim + rank)
    for m in _masks(rng, ndim, 120):
        want, n_want = _reference(m, rank)
        got, n = connected_components(m, rank)
        assert n == n_want and got.dtype == np.int32 and got.shape == m.shape
        assert np.array_equal(got, want), (m.shape, m.flags["F_CONTIGUOUS"], m.dtype)


def test_connected_components_default_is_full_connectivity_and_edge_cases():
    m = np.zeros((5, 5, 5), bool)
    m[1, 1, 1] = m[2, 2, 2] = True  # diagonal neighbours: one component at 26, two at 6
    assert connected_components(m)[1] == 1
    assert connected_components(m, 1)[1] == 2
    assert connected_components(np.zeros((4, 3, 2), bool)) [1] == 0
    assert connected_components(np.ones((4, 3, 2), bool))[1] == 1
    empty, n = connected_components(np.zeros((0, 3, 3), bool))
    assert n == 0 and empty.shape == (0, 3, 3)
    # other dimensions take scipy itself (cc3d's 2D numbers differ from scipy's)
    one_d, n = connected_components(np.array([1, 0, 1, 1, 0, 1]))
    assert n == 3 and one_d.tolist() == [1, 0, 2, 2, 0, 3]
