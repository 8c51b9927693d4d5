"""A reward for the end-to-end test only: it spreads within a group, so GRPO's advantages are non-zero.

A random-init model never answers the toy questions, so the real rewards are all 0 and the policy
gradient vanishes; this one (the share of distinct characters in the response) varies from
response to response, which is all the weight-update plumbing test needs.
"""


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    text = solution_str or ""
    return {"score": len(set(text)) / (1 + len(text)), "acc": 0.0}
