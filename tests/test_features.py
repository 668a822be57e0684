"""The per-team, per-hour cap on caller-named features (pipeline/features.py), pure."""

from __future__ import annotations

from trioproxy.pipeline.features import OTHER, FeatureCap

HOUR = 3600.0


def test_a_team_names_a_bounded_number_of_features_per_hour() -> None:
    cap = FeatureCap(per_hour=3)
    t0 = 1_700_000_000.0 - 1_700_000_000.0 % HOUR
    assert [cap.name("t", f"f{i}", t0 + i) for i in range(5)] == ["f0", "f1", "f2", OTHER, OTHER]
    assert cap.name("t", "f1", t0 + 10) == "f1"  # one it named this hour stays named
    assert cap.name("u", "f9", t0 + 10) == "f9"  # another team has its own hour
    assert cap.name("t", "f3", t0 + HOUR) == "f3"  # a new hour starts over
    assert cap.capped == 2


def test_random_features_per_request_make_a_bounded_number_of_names() -> None:
    """A caller naming a new feature per request (an id) made one roll-up row per request."""
    cap = FeatureCap()
    names = {cap.name("t", f"req-{i}", 1_000_000.0) for i in range(10_000)}
    assert len(names) == cap.per_hour + 1  # the first ones, and "other"
