"""Reward functions and reward managers registered into verl's reward loop."""
