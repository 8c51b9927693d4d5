"""Default assets built locally: a tiny random-init Qwen2.5-VL checkpoint with its tokenizer and processor."""
