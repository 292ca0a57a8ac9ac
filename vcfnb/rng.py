"""The one place random streams are made: seeds → generators → scikit-learn ``random_state``.

Every vcfnb function that draws takes ``rng`` (an int seed, a :class:`numpy.random.Generator`
or ``None``) and normalises it here, so the same seed gives the same numbers everywhere.

Examples
--------
>>> random_state(7)
7
>>> int(generator(0).integers(10)) == int(generator(0).integers(10))
True
>>> bool(derive(0, "lasso").integers(1000) == derive(0, "lasso").integers(1000))
True
"""
from __future__ import annotations

import hashlib
import numbers

import numpy as np

__all__ = ["RNGLike", "generator", "random_state", "draw_state", "derive"]

RNGLike = int | np.random.Generator | None


def generator(rng: RNGLike) -> np.random.Generator:
    """A Generator from a seed, a Generator (returned as is) or None (fresh entropy)."""
    return np.random.default_rng(rng)


def random_state(rng: RNGLike) -> int:
    """An int ``random_state`` for scikit-learn: an int passes through unchanged (``rng=seed``
    gives ``random_state=seed``); a Generator or None yields a draw."""
    if isinstance(rng, numbers.Integral) and not isinstance(rng, bool):
        return int(rng)
    return draw_state(rng)


def draw_state(rng: RNGLike) -> int:
    """An int in ``[0, 2**31 - 1)`` drawn from ``rng`` (an int seed is not passed through)."""
    return int(generator(rng).integers(0, 2**31 - 1))


def derive(seed: int, *keys: int | str) -> np.random.Generator:
    """An independent stream for step ``keys`` of a run with master ``seed``: the same keys
    always give the same stream, different keys independent ones."""
    ints = [int(seed)] + [int(hashlib.sha256(str(k).encode()).hexdigest()[:8], 16) for k in keys]
    return np.random.default_rng(np.random.SeedSequence(ints))
