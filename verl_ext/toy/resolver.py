"""``${verl_ext_asset:NAME}``: recipe paths to the embedded default assets, built on first use.

``${verl_ext_asset:tiny-qwen2.5-vl}`` or ``${verl_ext_asset:visual-math/train.parquet}`` resolves to an absolute
path into the asset cache (``$VERL_EXT_CACHE``, default ``~/.cache/verl_ext``), built there the first time any
process resolves it: a fresh clone needs no hub, and Ray workers see the same path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from omegaconf import OmegaConf

RESOLVER_NAME = "verl_ext_asset"


def cache_dir() -> Path:
    """Where the embedded assets are built."""
    return Path(os.environ.get("VERL_EXT_CACHE", Path.home() / ".cache" / "verl_ext")).expanduser().resolve()


def _tiny_model(root: Path, rest: str) -> Path:
    from verl_ext.toy.tiny_model import ensure_tiny_model

    if rest:
        raise ValueError(f"tiny-qwen2.5-vl is a directory; got a sub-path {rest!r}")
    return ensure_tiny_model(root / "tiny-qwen2.5-vl")


def _visual_math(root: Path, rest: str) -> Path:
    from verl_ext.toy.visual_math import ensure_dataset

    files = ensure_dataset(root / "visual-math")
    if not rest:
        return root / "visual-math"
    key = rest.removesuffix(".parquet")
    if key not in files:
        raise ValueError(f"visual-math has {sorted(files)}; got {rest!r}")
    return Path(files[key])


def _toy_sft(root: Path, rest: str) -> Path:
    from verl_ext.toy.sft_model import ensure_toy_sft_model

    built = ensure_toy_sft_model(root / "toy-sft")
    path = built / rest if rest else built
    if not path.exists():
        raise ValueError(f"toy-sft has model/ and data/ (see verl_ext.toy.data); no {rest!r}")
    return path


ASSETS: dict[str, Callable[[Path, str], Path]] = {
    "tiny-qwen2.5-vl": _tiny_model,
    "visual-math": _visual_math,
    "toy-sft": _toy_sft,  # the toy SFT model (the shipped build, else verl's SFT trainer, ~10 min) and its data
}


def resolve_asset(spec: str) -> str:
    """Build the asset named by ``spec`` (``NAME`` or ``NAME/FILE``) if missing; return its absolute path."""
    name, _, rest = spec.strip().partition("/")
    if name not in ASSETS:
        raise ValueError(f"unknown verl_ext asset {name!r}; known: {', '.join(sorted(ASSETS))}")
    return str(ASSETS[name](cache_dir(), rest))


def register_resolvers() -> list[str]:
    """Register the OmegaConf resolver (idempotent); returns the names registered."""
    if not OmegaConf.has_resolver(RESOLVER_NAME):
        # use_cache: each process builds or looks up an asset once, whatever the number of keys naming it.
        OmegaConf.register_new_resolver(RESOLVER_NAME, resolve_asset, use_cache=True)
    return [RESOLVER_NAME]
