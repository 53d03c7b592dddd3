"""Chat-message building blocks and the prompt templates shared by several benchmarks.

Messages follow the OpenAI / Hugging Face chat shape the pipeline feeds to the processor::

    [{"role": "user", "content": [{"type": "image", "image": b"..."},
                                  {"type": "video", "video": "/data/x.mp4"},
                                  {"type": "text", "text": "..."}]}]

A ``system`` message may come first, and a trailing ``assistant`` message is a *prefill* the model
continues (VLMEvalKit's MVBench ``"Best option:("``). Media come before the text unless a template
interleaves them (MMMU), as both harnesses do for single-image prompts.
"""

from __future__ import annotations

from evals.sample import Media, Sample

# lmms-eval YAML defaults (``lmms_eval_specific_kwargs.default.post_prompt``)
LMMS_MCQ_SUFFIX = "\nAnswer with the option's letter from the given choices directly."
SHORT_ANSWER_SUFFIX = "\nAnswer the question using a single word or phrase."
# VLMEvalKit ``ImageMCQDataset.build_prompt``
VLMK_MCQ_SUFFIX = "Please select the correct answer from the options above. \n"


def media_part(media: Media) -> dict:
    """``{"type": "image", "image": <bytes|path>}`` or the video equivalent."""
    return {"type": media.kind, media.kind: media.value}


def text_part(text: str) -> dict:
    return {"type": "text", "text": text}


def user_turn(sample: Sample, text: str) -> list[dict]:
    """One user message: every medium of the sample in order, then the text."""
    return [{"role": "user", "content": [media_part(m) for m in sample.media] + [text_part(text)]}]


def lmms_option_lines(options: dict[str, str]) -> str:
    """``A. cat\\nB. dog`` (lmms-eval AI2D / ScienceQA / MMMU ``parse_options``)."""
    return "\n".join(f"{letter}. {value}" for letter, value in options.items())


def vlmevalkit_mcq_text(question: str, options: dict[str, str], hint: str | None = None) -> str:
    """VLMEvalKit ``ImageMCQDataset.build_prompt`` text (``Hint:`` / ``Question:`` / ``Options:``)."""
    prompt = f"Hint: {hint}\n" if hint else ""
    prompt += f"Question: {question}\n"
    if options:
        prompt += "Options:\n" + "".join(f"{k}. {v}\n" for k, v in options.items())
        prompt += VLMK_MCQ_SUFFIX
    return prompt
