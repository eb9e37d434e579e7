"""Seeding: every random choice flows from one root seed.

Sample ``i`` of a run with root seed ``s`` always uses the generator returned by
:func:`sample_rng(s, i) <sample_rng>`, whoever computes it (one process, a pool
or a Dask cluster), so outputs do not depend on the worker count.
"""

from __future__ import annotations

import numpy as np


def sample_rng(root_seed: int, index: int) -> np.random.Generator:
    """Independent generator for sample ``index`` of a run seeded with ``root_seed``.

    Uses ``SeedSequence(root_seed, spawn_key=(index,))``, the child that
    ``SeedSequence(root_seed).spawn()`` would give at position ``index``.

    Examples
    --------
    >>> a = sample_rng(7, 3).random()
    >>> b = sample_rng(7, 3).random()
    >>> a == b
    True
    """
    if int(root_seed) < 0 or int(index) < 0:
        raise ValueError(f"seed and sample index must be non-negative, got {root_seed} and {index}")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(int(root_seed), spawn_key=(int(index),))))
