"""Fixtures shared by the voting tests."""

import pytest

from verl_ext.voting import equivalence


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
