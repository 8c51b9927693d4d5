"""The laptop-scale reproduction of "First SFT, second RL, third UPT" (examples/toy_repro.sh)."""
