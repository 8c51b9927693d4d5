"""Hydra config groups shipped with verl-ext (on Hydra's search path through ``hydra_plugins``)."""
