"""Compatibility shims for third-party APIs that vcfnb's dependencies still call.

pyradiomics' ``LBP3D`` image type (``radiomics.imageoperations.getLBP3DImage``) does
``from scipy.special import sph_harm``. SciPy deprecated ``sph_harm`` in 1.15 and removed it in
1.17 in favour of ``sph_harm_y``, which takes the degree first and swaps the meaning of the two
angles:

====================================  ==================================================
SciPy <= 1.16                         SciPy >= 1.15
====================================  ==================================================
``sph_harm(m, n, theta, phi)``        ``sph_harm_y(n, m, theta, phi)``
``theta``: azimuthal angle [0, 2pi]   ``theta``: polar (colatitudinal) angle [0, pi]
``phi``: polar angle [0, pi]          ``phi``: azimuthal angle [0, 2pi]
====================================  ==================================================

so ``sph_harm(m, n, theta, phi) == sph_harm_y(n, m, phi, theta)``. :func:`sph_harm` below is that
mapping plus the old function's conventions at the edges (degree and order truncated to integers,
NaN where ``n < 0`` or ``|m| > n`` where ``sph_harm_y`` returns 0, a NumPy scalar for scalar
input). ``tests/test_lbp.py`` checks it against values computed with SciPy 1.16.

Importing this module installs the shim (:func:`install`) into ``scipy.special`` when, and only
when, SciPy lacks ``sph_harm``; :mod:`vcfnb.features` imports it, so the main process and every
extraction worker (which import :mod:`vcfnb.features` to run a work unit) have it before
pyradiomics' LBP3D filter runs. An installed SciPy that still has ``sph_harm`` is left alone.
"""
from __future__ import annotations

import numpy as np

__all__ = ["sph_harm", "install", "SHIMMED"]

#: names this module installed into ``scipy.special`` (empty when SciPy had them all)
SHIMMED: list[str] = []


def sph_harm(m, n, theta, phi):
    """SciPy <= 1.16's ``scipy.special.sph_harm`` computed with ``sph_harm_y``.

    Parameters
    ----------
    m : array_like
        Order of the harmonic, ``|m| <= n``; non-integers are truncated toward zero, as the old
        ufunc did.
    n : array_like
        Degree, ``n >= 0``; truncated toward zero likewise.
    theta : array_like
        Azimuthal (longitudinal) angle in radians.
    phi : array_like
        Polar (colatitudinal) angle in radians.

    Returns
    -------
    complex or ndarray
        ``Y_n^m(theta, phi)`` with SciPy's normalisation and Condon-Shortley phase, broadcast
        over the inputs; NaN where ``n < 0``, ``|m| > n`` or ``m``/``n`` is not finite. A NumPy
        complex scalar for scalar input.

    Examples
    --------
    >>> complex(sph_harm(1, 2, 0.3, 0.7))  # SciPy 1.16: (-0.3636524725884646-0.11249089203178195j)
    (-0.3636524725884646-0.11249089203178195j)
    """
    from scipy.special import sph_harm_y

    m, n, theta, phi = np.broadcast_arrays(np.asarray(m, dtype=float), np.asarray(n, dtype=float),
                                           np.asarray(theta, dtype=float),
                                           np.asarray(phi, dtype=float))
    valid = np.isfinite(m) & np.isfinite(n)
    mi = np.where(valid, np.trunc(np.where(valid, m, 0.0)), 0.0).astype(np.int64)
    ni = np.where(valid, np.trunc(np.where(valid, n, 0.0)), 0.0).astype(np.int64)
    valid &= (ni >= 0) & (np.abs(mi) <= ni)
    out = np.asarray(sph_harm_y(np.where(valid, ni, 0), np.where(valid, mi, 0), phi, theta),
                     dtype=np.complex128)
    out = np.where(valid, out, complex(np.nan, 0.0))
    return out[()] if out.ndim == 0 else out


def install() -> list[str]:
    """Put :func:`sph_harm` into ``scipy.special`` when SciPy no longer has it (SciPy >= 1.17).

    Idempotent; returns the names installed by this process so far (:data:`SHIMMED`).
    """
    import scipy.special

    if not hasattr(scipy.special, "sph_harm") and hasattr(scipy.special, "sph_harm_y"):
        scipy.special.sph_harm = sph_harm
        SHIMMED.append("sph_harm")
    return list(SHIMMED)


install()
