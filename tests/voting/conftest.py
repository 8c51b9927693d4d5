"""Fixtures shared by the voting tests, and the hypothesis profiles of their property tests."""

import os

import pytest

from verl_ext.voting import equivalence

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # the test extra is not installed: the property tests fail to import, the rest run
    pass
else:
    # 50 examples a test keeps the fast test set fast; VERL_EXT_HYPOTHESIS=long runs 2,000. No example database.
    _COMMON = {"deadline": None, "database": None, "suppress_health_check": [HealthCheck.function_scoped_fixture]}
    settings.register_profile("fast", max_examples=50, **_COMMON)
    settings.register_profile("long", max_examples=2000, **_COMMON)
    settings.load_profile(os.environ.get("VERL_EXT_HYPOTHESIS", "fast"))


@pytest.fixture(autouse=True)
def fresh_caches():
    """Cached verdicts and answer kinds must not leak from a test that patches the grader's guards."""
    yield
    equivalence.clear_cache()


@pytest.fixture
def restore_timeouts():
    """Put the process-wide grader limits back after a test changes them."""
    saved = equivalence.get_timeouts()
    yield
    equivalence.set_timeouts(per_pair=saved[0], per_vote=saved[1])
