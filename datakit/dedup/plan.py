"""The block layout of a multi-index search, chosen from a cost model.

Multi-index hashing (Norouzi, Punjani and Fleet, "Fast Search in Hamming
Space with Multi-Index Hashing", CVPR 2012) cuts the 64 bits into ``m``
disjoint blocks. If two hashes differ in at most ``r`` bits, then by the
pigeonhole principle some block differs in at most ``s = r // m`` bits
(sharper: with ``r = s m + a``, one of the first ``a + 1`` blocks is within
``s`` or one of the others within ``s - 1``, so ``r = 6`` searches one 22-bit
block at radius 2 and two at radius 1; :func:`_block_radii`).

:func:`_plan` picks ``m`` per call (``m = 3`` blocks of 22, 21 and 21 bits,
radius 2 in each, for ``r = 8`` and a million hashes); when the model says the
quadratic scan is cheaper (tiny inputs, or ``r`` above about 20, where almost
every pair is a candidate) it returns None and the caller runs a chunked brute
force. With the block width capped at 24 bits, the candidate term grows as
``n**2 / 2**22``: fine to a few million hashes at ``r = 8``.
"""
from __future__ import annotations

import math

__all__: list[str] = []  # package-internal: the searches call _plan, _blocks and _block_radii

#: Widest block (bits) a direct-addressed table may have: 2**24 int32 starts and a bitmap = 80 MiB.
_MAX_TABLE_BITS = 24

# Relative per-element costs for the planner (measured roughly on numpy 2.x).
_COST_LOOKUP = 4.0  # one key: xor, bitmap gather, nonzero
_COST_CANDIDATE = 4.0  # one candidate: expand, gather, xor, popcount
_COST_BRUTE = 1.0  # one cell of the brute-force scan
_COST_TABLE = 1.0  # one table bucket (bincount + cumsum)


def _ball(width: int, radius: int) -> int:
    """Number of values within ``radius`` bits of a ``width``-bit value."""
    return sum(math.comb(width, k) for k in range(min(radius, width) + 1))


def _blocks(m: int) -> list[tuple[int, int]]:
    """``m`` contiguous blocks covering 64 bits, as ``(shift, width)``, widest first."""
    base, extra = divmod(64, m)
    widths = [base + (1 if k < extra else 0) for k in range(m)]
    out, shift = [], 0
    for w in widths:
        out.append((shift, w))
        shift += w
    return out


def _block_radii(radius: int, m: int) -> list[int]:
    """Per-block search radii for ``m`` blocks (Norouzi et al. 2012, Proposition 1).

    With ``radius = s * m + a`` (``0 <= a < m``), two hashes within ``radius``
    agree to within ``s`` bits on one of the first ``a + 1`` blocks or to within
    ``s - 1`` bits on one of the others (else they would differ in at least
    ``(a + 1)(s + 1) + (m - a - 1) s = radius + 1`` bits). A radius of -1 means
    the block need not be searched.
    """
    s, a = divmod(radius, m)
    return [s] * (a + 1) + [s - 1] * (m - a - 1)


def _plan(n_db: int, n_query: int, radius: int, self_join: bool
          ) -> tuple[list[tuple[int, int]], list[int]] | None:
    """Choose blocks and per-block radii minimising the estimated cost; None = brute force."""
    pairs = n_query * (n_db - 1) / 2 if self_join else n_query * n_db
    best, best_cost = None, _COST_BRUTE * pairs
    for m in range(1, 65):
        blocks = _blocks(m)
        if blocks[0][1] > _MAX_TABLE_BITS:
            continue
        radii = _block_radii(radius, m)
        if radii[0] > 3:  # the flip-mask enumeration grows too fast; more blocks are cheaper
            continue
        cost = 0.0
        for (_, w), s in zip(blocks, radii):
            if s < 0:
                continue
            ball = _ball(w, s)
            lookups = n_query * ball * (0.5 if self_join else 1.0)
            cands = lookups * n_db / 2.0**w
            cost += _COST_LOOKUP * lookups + _COST_CANDIDATE * cands + _COST_TABLE * 2.0**w + 2.0 * n_db
        if cost < best_cost:
            best, best_cost = (blocks, radii), cost
    return best
