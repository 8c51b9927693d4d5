"""Self-consistency voting for MM-UPT: extract final answers, cluster equivalent ones, vote, and the
one scorer of an answer against a label.

Pure Python (no torch, no verl). Symbolic equivalence runs in a child process under a
timeout; see :func:`set_timeouts`.
"""

from verl_ext.voting.equivalence import clear_cache, get_timeouts, is_equivalent, set_timeouts, warm_up
from verl_ext.voting.extract import STYLES, extract_answer
from verl_ext.voting.normalize import normalize
from verl_ext.voting.score import is_correct, read_answer
from verl_ext.voting.vote import CLUSTERINGS, TIE_BREAKS, Vote, cluster_answers, vote

__all__ = [
    "CLUSTERINGS", "STYLES", "TIE_BREAKS", "Vote", "clear_cache", "cluster_answers", "extract_answer", "get_timeouts",
    "is_correct", "is_equivalent", "normalize", "read_answer", "set_timeouts", "vote", "warm_up",
]
