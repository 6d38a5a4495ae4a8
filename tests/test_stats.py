"""Per-sample correctness and the exact McNemar test that tells a real accuracy change from a few flips."""

import math

import numpy as np
import pytest

from effkit.stats import mcnemar_exact, pack_correct, paired_change, unpack_correct


def test_packed_correctness_matches_numpy_packbits_and_round_trips():
    rng = np.random.default_rng(0)
    correct = rng.random(359) > 0.1
    text = pack_correct(correct.tolist())
    assert np.array_equal(np.frombuffer(__import__("base64").b64decode(text), np.uint8), np.packbits(correct))
    assert unpack_correct(text, 359) == correct.tolist()
    assert len(text) <= 4 * math.ceil(math.ceil(359 / 8) / 3)  # 45 bytes as base64: compact
    with pytest.raises(ValueError, match="expected 400"):
        unpack_correct(text, 400)


@pytest.mark.parametrize(
    ("lost", "gained", "p_value"),
    [
        (0, 0, 1.0),
        (1, 0, 1.0),
        (2, 0, 0.5),
        (5, 5, 1.0),
        (10, 0, 2 / 2**10),
        (8, 2, 2 * (1 + 10 + 45) / 2**10),  # two-sided binomial tail: C(10,0) + C(10,1) + C(10,2)
    ],
)
def test_exact_mcnemar_p_values(lost, gained, p_value):
    assert mcnemar_exact(lost, gained) == pytest.approx(p_value)
    assert mcnemar_exact(gained, lost) == pytest.approx(p_value)  # symmetric


def test_paired_change_counts_flips_each_way():
    before = [True, True, True, False, False, True]
    after = [True, False, False, False, True, True]
    change = paired_change(pack_correct(before), pack_correct(after), 6)
    assert (change.lost, change.gained, change.samples) == (2, 1, 6)
    assert change.delta_pp == pytest.approx(-100 / 6)
    assert change.describe() == "-16.67 pp, 3 samples, p=1"
    assert change.cell() == "-2/+1 p=1.00"
    assert paired_change(pack_correct(before), pack_correct(before), 6).cell() == "none"
