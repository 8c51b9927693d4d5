"""verl-ext: unsupervised post-training (MM-UPT) of multimodal LLMs as a verl plugin."""

__version__ = "0.1.0"
