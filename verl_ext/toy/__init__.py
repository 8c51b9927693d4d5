"""Laptop scaffolding: everything the CPU proof needs and a GPU user does not.

The tiny Qwen2.5-VL (``tiny_model``), the drawn visual-math questions (``visual_math``) and their SFT
form (``sft_data``), the toy reproduction's data, SFT model and report (``data``, ``sft_model``, ``report``),
benchmark stand-ins (``fixtures``) and synthesis with a random-init model (``standin_synthesis``). The rest
of the package never imports this folder but for the ``${verl_ext_asset:...}`` resolver the plugin registers.
"""
