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


#: Second spawn-key element of :func:`choice_rng` and :func:`retry_rng` (two- and three-element keys
#: never collide with :func:`sample_rng`'s one-element keys).
CHOICE_STREAM, RETRY_STREAM = 0, 1


def choice_rng(root_seed: int, index: int) -> np.random.Generator:
    """The generator of the *choices* of sample ``index``: its method, whether it is augmented, host, donor.

    Kept apart from :func:`sample_rng`, which draws only the method's params:
    so sample ``index`` of an export on host ``h`` and donor ``d`` has the
    params of ``lesionmix METHOD --seed S --index I`` on ``(h, d)``.
    """
    if int(root_seed) < 0 or int(index) < 0:
        raise ValueError(f"seed and sample index must be non-negative, got {root_seed} and {index}")
    seq = np.random.SeedSequence(int(root_seed), spawn_key=(int(index), CHOICE_STREAM))
    return np.random.Generator(np.random.PCG64(seq))


def retry_rng(root_seed: int, index: int, attempt: int) -> np.random.Generator:
    """The params generator of redraw ``attempt`` (>= 1) of sample ``index`` (attempt 0 is :func:`sample_rng`)."""
    if int(attempt) == 0:
        return sample_rng(root_seed, index)
    seq = np.random.SeedSequence(int(root_seed), spawn_key=(int(index), RETRY_STREAM, int(attempt)))
    return np.random.Generator(np.random.PCG64(seq))
