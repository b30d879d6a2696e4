"""The spread of the repeats and the noise flag next to every median."""
import pytest
import torch

from mat_kernels.bench import timing


def test_spread_flags_the_issue_example_as_noisy():
    # The same case measured 21 ms and 448 ms: a median of it means nothing.
    s = timing.spread([21.0, 35.0, 448.0])
    assert s["median_ms"] == 35.0 and s["min_ms"] == 21.0 and s["max_ms"] == 448.0 and s["noisy"] is True


def test_spread_rules():
    tight = timing.spread([10.0, 10.5, 11.0, 10.2, 10.8])
    assert tight["noisy"] is False and tight["iqr_ms"] == pytest.approx(10.8 - 10.2)
    # max/min > 2 alone is wide.
    assert timing.spread([10.0, 10.0, 10.0, 10.0, 25.0])["noisy"] is True
    # IQR/median > 0.2 alone is wide (max/min = 1.6).
    wide_iqr = timing.spread([10.0, 10.0, 13.0, 16.0, 16.0])
    assert wide_iqr["max_ms"] / wide_iqr["min_ms"] < timing.NOISY_MAX_OVER_MIN
    assert wide_iqr["iqr_ms"] / wide_iqr["median_ms"] > timing.NOISY_IQR_OVER_MEDIAN and wide_iqr["noisy"] is True
    # One repeat: the spread is unknown, not "fine".
    assert timing.spread([5.0]) == {"median_ms": 5.0, "min_ms": 5.0, "max_ms": 5.0, "iqr_ms": None, "noisy": None}
    with pytest.raises(ValueError, match="times_ms"):
        timing.spread([])


def test_measure_keeps_every_repeat_and_its_spread():
    t = timing.measure(lambda: None, torch.device("cpu"), warmup=0, repeats=4)
    assert len(t["times_ms"]) == 4 and t["min_ms"] == min(t["times_ms"]) and t["max_ms"] == max(t["times_ms"])
    assert set(t) >= {"median_ms", "iqr_ms", "noisy"}


def test_the_rule_is_stated_with_its_thresholds():
    assert "max/min > 2" in timing.NOISE_RULE and "IQR/median > 0.2" in timing.NOISE_RULE
