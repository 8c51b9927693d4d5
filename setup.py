"""verl-ext: MM-UPT (unsupervised post-training of multimodal LLMs) as a plugin for verl 0.9.1."""

from pathlib import Path

from setuptools import find_packages, setup

# Everything a run needs on any machine. torch is left to an extra: verl's GPU stack pins
# torch 2.11 (vLLM 0.24), while the CPU machines this project is tested on carry torch 2.14.1.
INSTALL_REQUIRES = [
    "verl[verl-core]==0.9.1",
    "transformers==5.9.0",  # inside verl's bounds, and the version verl's vllm extra pins
    "hydra-core>=1.3,<1.4",
    "omegaconf>=2.3,<2.4",
    "mathruler==0.1.0",
    "sympy>=1.13",  # imported by mathruler, not declared by it
    "pylatexenc>=2.10",  # imported by mathruler, not declared by it
    "tqdm>=4.66",
    "jinja2>=3.1",  # prompt templates
    "pillow>=10.0",
    "pyarrow>=19.0",
    "datasets>=3.0",
    "qwen-vl-utils>=0.0.14",
    "tokenizers>=0.22",
    "matplotlib>=3.8",  # evaluation bar charts, toy-run plots
    "httpx>=0.27",  # LLM-judge client for OpenAI-compatible endpoints
]

EXTRAS_REQUIRE = {
    # CPU machines (and CI): these builds sit on local disk here and run without a GPU.
    "cpu": ["torch==2.14.1", "torchvision==0.29.1"],
    # GPU clusters: vLLM rollout and FSDP with flash-attention, at the versions verl 0.9.1 pins.
    "gpu": ["verl[vllm,fsdp]==0.9.1"],
    "test": ["pytest>=8", "pytest-timeout>=2.3", "hypothesis>=6"],
}

setup(
    name="verl-ext",
    version="0.1.0",
    description="Unsupervised post-training (MM-UPT: majority-vote GRPO) of multimodal LLMs, as a verl plugin",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["verl_ext", "verl_ext.*"]),
    package_data={"verl_ext": ["config/**/*.yaml", "prompts/*.txt", "eval/*.txt", "toy/*.json", "toy/*.jinja",
                              "toy/sft_shipped/*", "toy/sft_shipped/model/*"]},  # the shipped toy SFT model
    include_package_data=True,
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={
        "verl.plugins": ["verl_ext = verl_ext.plugin"],
    },
)
