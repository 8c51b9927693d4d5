"""verl trainer-side components: the group vote that runs between rollout and advantages."""
