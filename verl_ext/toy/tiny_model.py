"""Build a tiny, randomly initialised Qwen2.5-VL checkpoint locally (no hub), small enough for CPU tests.

The real architecture, a byte-level BPE tokenizer trained here on a generated corpus (Qwen2's pre-tokenizer,
Qwen2.5-VL's special tokens and chat format) and a ``Qwen2_5_VLProcessor``.

    python -m verl_ext.toy.tiny_model out=/tmp/tiny-qwen2.5-vl
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from verl_ext.files import atomic_path, exclusive_lock, manifest_matches
from verl_ext.prompts import FORMAT_INSTRUCTION
from verl_ext.toy.visual_math import VisualMathConfig, sample_scene

logger = logging.getLogger(__name__)

# Bump when the build recipe changes so ensure_tiny_model rebuilds stale checkpoints.
BUILD_VERSION = 1
MARKER_NAME = ".verl_ext_tiny_model.json"
"""File written last inside a finished checkpoint; its presence means the build completed."""

ENDOFTEXT = "<|endoftext|>"
IM_END = "<|im_end|>"
# Same order as in Qwen2.5-VL, so the ids keep the same relative layout (appended after the BPE vocab).
SPECIAL_TOKENS: tuple[str, ...] = tuple(f"<|{name}|>" for name in (
    "endoftext im_start im_end object_ref_start object_ref_end box_start box_end quad_start quad_end"
    " vision_start vision_end vision_pad image_pad video_pad").split())

# Written for this project (chat_template.jinja): exactly the Qwen2-VL chat format, i.e. a default system turn
# unless the conversation starts with one, <|im_start|>role\n...<|im_end|>\n turns, and vision placeholders.
CHAT_TEMPLATE = resources.files(__package__).joinpath("chat_template.jinja").read_text(encoding="utf-8").rstrip("\n")


@dataclass(frozen=True)
class TinyModelConfig:
    """Sizes of the tiny Qwen2.5-VL checkpoint and of its tokenizer."""

    vocab_size: int = 3072
    """Target size of the BPE vocabulary (256 bytes + merges; fewer if pairs run out), before the special tokens."""
    hidden_size: int = 64
    """Hidden size of the language model."""
    num_hidden_layers: int = 2
    """Number of decoder layers of the language model."""
    num_attention_heads: int = 4
    """Attention heads of the language model; hidden_size / heads is the head dim used for M-RoPE."""
    num_key_value_heads: int = 2
    """Key/value heads (grouped-query attention) of the language model."""
    intermediate_size: int = 128
    """MLP width of the language model."""
    max_position_embeddings: int = 4096
    """Longest sequence the rotary embedding is configured for."""
    vision_depth: int = 2
    """Number of vision transformer blocks; the last one uses full attention, the rest windowed attention."""
    vision_hidden_size: int = 32
    """Hidden size of the vision transformer."""
    vision_num_heads: int = 2
    """Attention heads of the vision transformer (head dim must be divisible by 4 for its 2-D rotary)."""
    vision_intermediate_size: int = 64
    """MLP width of the vision transformer."""
    patch_size: int = 14
    """Side of a square vision patch in pixels."""
    spatial_merge_size: int = 2
    """Side of the patch block merged into one LLM token (2 -> 4 patches per image token)."""
    temporal_patch_size: int = 2
    """Frames per temporal patch; a still image is repeated to fill it."""
    min_pixels: int = 28 * 28 * 4
    """Smallest image area after the processor's resize (4 image tokens with patch 14 and merge 2)."""
    max_pixels: int = 28 * 28 * 64
    """Largest image area after the processor's resize (64 image tokens with patch 14 and merge 2)."""
    tie_word_embeddings: bool = True
    """Share the input embedding and the LM head, halving the vocab-sized parameters."""
    corpus_lines: int = 6000
    """Number of generated lines the tokenizer is trained on."""
    seed: int = 0
    """Seed for the tokenizer corpus and the weight initialisation; same seed -> same checkpoint."""

    def __post_init__(self) -> None:
        for ok, message in (
            (self.hidden_size % self.num_attention_heads == 0, "hidden_size must be divisible by num_attention_heads"),
            (self.num_attention_heads % self.num_key_value_heads == 0,
             "num_attention_heads must be divisible by num_key_value_heads"),
            (self.head_dim % 2 == 0 and self.head_dim >= 6,
             "head_dim (hidden_size / num_attention_heads) must be even and >= 6 for M-RoPE"),
            (self.vision_hidden_size % (4 * self.vision_num_heads) == 0,
             "vision_hidden_size / vision_num_heads must be a multiple of 4"),
            (0 < self.min_pixels <= self.max_pixels, "need 0 < min_pixels <= max_pixels"),
            (self.vocab_size >= 512, "vocab_size must be at least 512 (256 byte symbols + merges)"),
            (self.vision_depth >= 1 and self.num_hidden_layers >= 1,
             "need at least one vision block and one decoder layer"),
        ):
            if not ok:
                raise ValueError(message)

    @property
    def head_dim(self) -> int:
        """Per-head dimension of the language model."""
        return self.hidden_size // self.num_attention_heads

    @property
    def mrope_section(self) -> list[int]:
        """Split of the rotary half-dim into (temporal, height, width), in Qwen2.5-VL's 1/4, 3/8, 3/8 ratio."""
        half = self.head_dim // 2
        temporal = max(1, half // 4)
        height = (half - temporal) // 2
        return [temporal, height, half - temporal - height]


def _tokenizer_corpus(config: TinyModelConfig) -> list[str]:
    """The tokenizer's training text: task prompts, reasoning phrases, LaTeX and English words
    (``tokenizer_corpus.json``: the words, names, templates, colours and shapes the lines are made of)."""
    data = json.loads(resources.files(__package__).joinpath("tokenizer_corpus.json").read_text(encoding="utf-8"))
    words = " ".join(data["words"]).split()
    rng = random.Random(f"verl_ext.tiny_model.corpus:{config.seed}")
    lines = ["You are a helpful assistant.", FORMAT_INSTRUCTION.strip(), "system\nuser\nassistant\n"]
    # Each word in several surface forms so frequent words get whole-word tokens in all positions.
    lines += [f"{word} {word.capitalize()} {word}s {word}." for word in words]
    # The visual-math prompts and answers, without drawing their images.
    visual_math = VisualMathConfig(seed=config.seed)
    scenes = (sample_scene("train", i, visual_math) for i in range(max(1, config.corpus_lines // 4)))
    lines += [f"{scene.question}{FORMAT_INSTRUCTION} The answer is \\boxed{{{scene.answer}}}." for scene in scenes]
    for _ in range(config.corpus_lines):
        a, b = rng.randint(0, 99), rng.randint(1, 99)
        fields = {"a": a, "b": b, "c": a + b}
        for key, choices in (("color", "colors"), ("shape", "shapes"), ("shape2", "shapes"), ("letter", None),
                             ("letter2", None), ("name", "names"), ("name2", "names")):
            fields[key] = rng.choice(data[choices] if choices else "AB")
        kind = rng.random()
        if kind < 0.4:
            lines.append(rng.choice(data["sentences"]).format(**fields))
        elif kind < 0.5:
            # Multi-line reasoning, so newline runs (one pre-token under Qwen2's regex) get merged tokens too.
            steps = [rng.choice(data["sentences"]).format(**fields) for _ in range(rng.randint(2, 4))]
            lines.append(rng.choice(["\n", "\n\n"]).join(steps))
        elif kind < 0.7:
            lines.append(rng.choice(data["latex"]).format(**fields))
        else:
            lines.append(" ".join(rng.choice(words) for _ in range(rng.randint(4, 14))) + rng.choice(".?!,:;"))
    return lines


def _train_tokenizer(config: TinyModelConfig) -> Any:
    """Train a byte-level BPE with Qwen2's pre-tokenizer and wrap it as a ``Qwen2Tokenizer``."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import AddedToken
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX, Qwen2Tokenizer

    # Same normalizer / pre-tokenizer as Qwen2Tokenizer builds on load, so merges learned here apply unchanged.
    backend = Tokenizer(models.BPE())
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=config.vocab_size, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(_tokenizer_corpus(config), trainer=trainer)

    model_json = json.loads(backend.to_str())["model"]
    vocab: dict[str, int] = dict(model_json["vocab"])
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model_json["merges"]]
    for token in SPECIAL_TOKENS:
        vocab[token] = len(vocab)

    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        extra_special_tokens=[t for t in SPECIAL_TOKENS if t != ENDOFTEXT],
        errors="replace",
        model_max_length=config.max_position_embeddings,
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
    )
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS], special_tokens=True)
    tokenizer.chat_template = CHAT_TEMPLATE
    for token in SPECIAL_TOKENS:
        if tokenizer.convert_tokens_to_ids(token) != vocab[token]:
            raise RuntimeError(f"special token {token} did not keep its id {vocab[token]}")
    return tokenizer


def _build_processor(config: TinyModelConfig, tokenizer: Any) -> Any:
    """Qwen2.5-VL processor with small pixel bounds, so images become few tokens."""
    from transformers import Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    # Pass fresh `size` dicts: these constructors mutate the class-level default dict when given only
    # min_pixels/max_pixels, which would leak our tiny bounds into every later processor in the process.
    size = {"shortest_edge": config.min_pixels, "longest_edge": config.max_pixels}
    common = dict(patch_size=config.patch_size, temporal_patch_size=config.temporal_patch_size,
                  merge_size=config.spatial_merge_size)
    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=dict(size), **common),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(size=dict(size), **common),
        chat_template=CHAT_TEMPLATE,
    )


def _build_model(config: TinyModelConfig, tokenizer: Any) -> Any:
    """Random-init ``Qwen2_5_VLForConditionalGeneration`` whose special ids match ``tokenizer``."""
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = {token[2:-2]: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}  # "<|im_end|>": im_end

    def fields(*keys: str, prefix: str = "") -> dict[str, Any]:
        return {key: getattr(config, prefix + key) for key in keys}

    model_config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            **fields(
                "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "max_position_embeddings",
            ),
            "max_window_layers": config.num_hidden_layers,
            "rms_norm_eps": 1e-6,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": config.mrope_section},
            "bos_token_id": ids["endoftext"],
            "eos_token_id": ids["im_end"],
            "pad_token_id": ids["endoftext"],
            "tie_word_embeddings": config.tie_word_embeddings,
            "dtype": "float32",
        },
        vision_config={
            **fields("depth", "hidden_size", "intermediate_size", "num_heads", prefix="vision_"),
            **fields("patch_size", "spatial_merge_size", "temporal_patch_size"),
            "window_size": config.patch_size * config.spatial_merge_size * 4,
            "out_hidden_size": config.hidden_size,
            "fullatt_block_indexes": [config.vision_depth - 1],
            "tokens_per_second": 2,
        },
        image_token_id=ids["image_pad"],
        video_token_id=ids["video_pad"],
        vision_start_token_id=ids["vision_start"],
        vision_end_token_id=ids["vision_end"],
        tie_word_embeddings=config.tie_word_embeddings,
        dtype="float32",
    )
    torch.manual_seed(config.seed)
    model = Qwen2_5_VLForConditionalGeneration(model_config).to(torch.float32).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=ids["endoftext"], eos_token_id=[ids["im_end"], ids["endoftext"]], pad_token_id=ids["endoftext"]
    )
    return model


def _marker(config: TinyModelConfig) -> dict[str, Any]:
    return {"build_version": BUILD_VERSION, "config": dataclasses.asdict(config)}


def build_tiny_model(
    out_dir: str | os.PathLike[str], config: TinyModelConfig = TinyModelConfig(), *, overwrite: bool = False
) -> Path:
    """Build the checkpoint into ``out_dir`` and return its path: written in a temporary sibling, the marker
    last, then renamed into place (``FileExistsError`` if ``out_dir`` exists and not ``overwrite``)."""
    out_dir = Path(out_dir).absolute()
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} exists; pass overwrite=True to replace it")
    start = time.perf_counter()
    with atomic_path(out_dir) as tmp_dir:
        tmp_dir.mkdir()
        tokenizer = _train_tokenizer(config)
        processor = _build_processor(config, tokenizer)
        model = _build_model(config, tokenizer)
        model.save_pretrained(tmp_dir, safe_serialization=True)
        processor.save_pretrained(tmp_dir)
        # The processor saves its tokenizer, but save explicitly so AutoTokenizer finds every file it expects.
        tokenizer.save_pretrained(tmp_dir)
        # safetensors writes its file 0600; make the checkpoint readable by other users of a shared cache.
        for path in tmp_dir.iterdir():
            path.chmod(0o644)
        (tmp_dir / MARKER_NAME).write_text(json.dumps(_marker(config), indent=2, sort_keys=True))
    logger.info("built tiny Qwen2.5-VL at %s: %d params, vocab %d, %.1fs", out_dir,
                sum(p.numel() for p in model.parameters()), len(tokenizer), time.perf_counter() - start)
    return out_dir


def ensure_tiny_model(
    out_dir: str | os.PathLike[str], config: TinyModelConfig = TinyModelConfig(), *, force: bool = False
) -> Path:
    """Return ``out_dir``, building the checkpoint first unless a complete one for ``config`` is already
    there (or ``force``). Concurrent callers serialise on a lock file next to ``out_dir``: one builds."""
    out_dir = Path(out_dir).absolute()
    if not force and manifest_matches(out_dir / MARKER_NAME, _marker(config)):
        return out_dir
    with exclusive_lock(out_dir.parent / f".{out_dir.name}.lock"):
        if not force and manifest_matches(out_dir / MARKER_NAME, _marker(config)):
            return out_dir
        # Under the lock no build of out_dir runs: leftovers (files.temp_sibling's names) are from killed builds.
        for stale in out_dir.parent.glob(f".{out_dir.name}.tmp-*"):
            logger.warning("removing leftover of an interrupted build: %s", stale)
            shutil.rmtree(stale, ignore_errors=True)
        if out_dir.exists():
            logger.warning("%s is incomplete or was built with another config; rebuilding", out_dir)
        return build_tiny_model(out_dir, config, overwrite=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m verl_ext.toy.tiny_model out=DIR [force=true] [hidden_size=... ...]``: build (or reuse)
    the checkpoint; the keys are :class:`TinyModelConfig`'s fields."""
    from verl_ext.config.compose import builder_command

    return builder_command(
        argv, __doc__, "python -m verl_ext.toy.tiny_model", TinyModelConfig,
        lambda out, config, force: ensure_tiny_model(out, config, force=force),
    )


if __name__ == "__main__":
    sys.exit(main())
