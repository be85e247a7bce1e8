"""The serial pixel sweep of ImageNet-C's ``glass_blur``, compiled with numba (cached on disk after the first call).

Kept in its own module so that ``import dtn_bench`` does not import numba;
:func:`dtn_bench.data.corruptions.blur.glass_blur` imports this module the first time it runs.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def glass_sweep(img: np.ndarray, codes: np.ndarray, d: int) -> None:
    """Runs the recipe's sweeps in place.

    For image ``i`` and iteration ``t``, rows ``h = H - d, H - d - 1, ..., d + 1`` (outer) and columns
    ``w = W - d, ..., d + 1`` (inner) in that order: with ``k = codes[i, t, H - d - h, W - d - w]``, the shift is
    ``dx = k mod 2d - d``, ``dy = k div 2d - d``, and the pixel (all channels) at ``(h + dy, w + dx)`` is copied to
    ``(h, w)`` from the image as the sweep has left it so far.

    Args:
        img: uint8 ``[N, H, W, C]``, C-contiguous; changed in place.
        codes: integer ``[N, T, H - 2 d, W - 2 d]``, each in ``0 .. 4 d^2 - 1``.
        d: the largest shift (>= 1).
    """
    n, h_size, w_size, channels = img.shape
    span = 2 * d
    for i in range(n):
        for t in range(codes.shape[1]):
            for a in range(h_size - 2 * d):
                h = h_size - d - a
                for b in range(w_size - 2 * d):
                    w = w_size - d - b
                    k = codes[i, t, a, b]
                    hp = h + k // span - d
                    wp = w + k % span - d
                    for k in range(channels):
                        img[i, h, w, k] = img[i, hp, wp, k]
