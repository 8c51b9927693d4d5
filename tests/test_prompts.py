"""The prompt templates (jinja2) and the prompt constants every layer shares."""

from pathlib import Path

import pytest

from verl_ext.prompts import (
    FIELDS,
    FORMAT_INSTRUCTION,
    PromptError,
    available_prompts,
    format_choices,
    load_prompt,
)


def test_format_instruction_is_the_papers() -> None:
    assert FORMAT_INSTRUCTION == " Please reason step by step, and put your final answer within \\boxed{}."


def test_builtin_prompts() -> None:
    assert {"synth_in_context", "synth_direct"} <= set(available_prompts())
    in_context = load_prompt("synth_in_context")
    assert in_context.name == "synth_in_context" and in_context.path.is_file()
    assert in_context.fields == {"question", "answer", "choices"}
    direct = load_prompt("synth_direct.txt")
    assert direct.name == "synth_direct" and direct.fields == frozenset()
    for template in (in_context, direct):
        assert "<question>" in template.text and "</question>" in template.text
        assert "<image>" not in template.text  # the images go first


def test_prompt_by_path_render_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "mine.txt"
    path.write_text("Q: {{ question }} A: {{answer}}{{choices}} in \\boxed{}\n")
    template = load_prompt(path)
    assert template.name == str(path.absolute()) and template.fields == {"question", "answer", "choices"}
    # Braces inside values are never read as markers, LaTeX braces in the template are left alone.
    assert template.render({"question": "{{answer}}?", "answer": "\\frac{1}{2}", "choices": ""}) == (
        "Q: {{answer}}? A: \\frac{1}{2} in \\boxed{}"
    )
    with pytest.raises(PromptError, match="no value for answer"):
        template.render({"question": "x", "choices": ""})
    assert format_choices(["3", "4"]) == "\n(A) 3\n(B) 4" and format_choices([]) == ""

    with pytest.raises(PromptError, match="synth_direct.*synth_in_context"):
        load_prompt("no_such_prompt")
    with pytest.raises(PromptError, match="does not exist"):
        load_prompt(str(tmp_path / "missing.txt"))
    (tmp_path / "bad.txt").write_text("Look at {{image_caption}}")
    with pytest.raises(PromptError, match=f"unknown field.*image_caption.*{', '.join(FIELDS)}"):
        load_prompt(tmp_path / "bad.txt")
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(PromptError, match="empty"):
        load_prompt(tmp_path / "empty.txt")
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(PromptError, match="cannot read"):
        load_prompt(tmp_path / "binary.txt")


def test_template_syntax_errors_and_option_blocks(tmp_path: Path) -> None:
    (tmp_path / "broken.txt").write_text("Q: {{ question ")
    with pytest.raises(PromptError, match="broken.txt.*syntax error, line 1"):
        load_prompt(tmp_path / "broken.txt")
    assert format_choices({"A": "x", "C": "y"}) == "\n(A) x\n(C) y"  # a dict keeps its letters
