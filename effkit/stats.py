"""Is an accuracy change real, or a few flipped samples? Per-sample correctness, kept compactly, and a paired test.

On 359 test samples one sample is 0.28 pp, so a threshold in percentage points alone calls two flips a regression.
Two artifacts measured on the same test split are compared sample by sample: `lost` samples the first got right
and the second got wrong, `gained` the reverse. The exact McNemar test asks how likely a split at least this
uneven is when flips go either way with equal chance (a two-sided binomial test on lost + gained at p = 0.5).

No framework imports: correctness travels as base64 text in report.json and results.json.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass


def pack_correct(correct: Sequence[bool]) -> str:
    """Per-sample correctness as base64 of its bits, first sample in the highest bit (numpy's packbits order)."""
    data = bytearray((len(correct) + 7) // 8)
    for index, value in enumerate(correct):
        if value:
            data[index // 8] |= 0x80 >> (index % 8)
    return base64.b64encode(bytes(data)).decode("ascii")


def unpack_correct(text: str, count: int) -> list[bool]:
    """The inverse of `pack_correct` for `count` samples.

    Raises:
        ValueError: the text is not base64, or holds fewer than `count` bits.
    """
    data = base64.b64decode(text.encode("ascii"), validate=True)
    if len(data) * 8 < count:
        raise ValueError(f"correctness bits hold {len(data) * 8} samples, expected {count}")
    return [bool(data[index // 8] & (0x80 >> (index % 8))) for index in range(count)]


@dataclass(frozen=True)
class PairedChange:
    """How a second artifact's per-sample correctness differs from a first one's on the same samples."""

    lost: int  # right before, wrong now
    gained: int  # wrong before, right now
    samples: int
    p_value: float  # exact McNemar, two-sided

    @property
    def delta_pp(self) -> float:
        return (self.gained - self.lost) * 100.0 / self.samples if self.samples else 0.0

    def describe(self) -> str:
        """`-0.56 pp, 2 samples, p=0.50`."""
        flips = self.lost + self.gained
        noun = "sample" if flips == 1 else "samples"
        return f"{self.delta_pp:+.2f} pp, {flips} {noun}, p={self.p_value:.2g}"

    def cell(self) -> str:
        """A table cell: `-2/+0 p=0.50`, or `none` when every sample is classified as right or wrong as before."""
        return f"-{self.lost}/+{self.gained} p={self.p_value:.2f}" if self.lost + self.gained else "none"


def paired_change(before: str, after: str, samples: int) -> PairedChange:
    """Compare two packed correctness vectors over the same `samples` test samples."""
    first, second = unpack_correct(before, samples), unpack_correct(after, samples)
    lost = sum(1 for a, b in zip(first, second, strict=True) if a and not b)
    gained = sum(1 for a, b in zip(first, second, strict=True) if b and not a)
    return PairedChange(lost=lost, gained=gained, samples=samples, p_value=mcnemar_exact(lost, gained))


def mcnemar_exact(lost: int, gained: int) -> float:
    """Two-sided exact McNemar p-value: a binomial test of `lost` among `lost + gained` flips at p = 0.5."""
    flips = lost + gained
    if flips == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(min(lost, gained), flips, 0.5, alternative="two-sided").pvalue)


def sign_test(above: int, rounds: int) -> float:
    """One-sided exact sign test: how likely `above` or more of `rounds` paired timings exceed a bound when each
    falls on either side with equal chance (a binomial tail at p = 0.5)."""
    if rounds == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(above, rounds, 0.5, alternative="greater").pvalue)


def rank_test(later: Sequence[float], earlier: Sequence[float]) -> float:
    """One-sided Mann-Whitney U: how likely values at least this much larger than `earlier` come out of `later`
    when both are drawn alike (ties halved; exact for small samples)."""
    if not later or not earlier:
        return 1.0
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(later, earlier, alternative="greater").pvalue)
