"""Laptop scaffolding: everything the CPU proof needs and a GPU user does not.

The tiny Qwen2.5-VL built locally (``tiny_model``), the drawn visual-math questions (``visual_math``)
and their SFT form (``sft_data``), the toy reproduction's data, SFT model and report (``data``,
``sft_model``, ``report``), benchmark stand-ins in the real schemas (``fixtures``) and synthesis
with a random-init model (``standin_synthesis``). The rest of the package never imports this
folder; recipes reach it through the ``${verl_ext_asset:...}`` resolver (``resolver``), which the
plugin registers.
"""
