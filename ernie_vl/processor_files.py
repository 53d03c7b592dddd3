"""The processor side of a checkpoint folder: the reference's processor defaults, writing them (with the chat template
and the timestamp font) and reading the chat template back.

`write_processor_files` writes what both `Processor.from_pretrained` and transformers 5.23.0's `AutoProcessor` load.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Mapping

from .chat import DEFAULT_CHAT_TEMPLATE
from .errors import ProcessingError
from .image_transforms import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

FONT_NAME = "Roboto-Regular.ttf"
PACKAGED_FONT = Path(__file__).parent / "fonts" / FONT_NAME


# Defaults of Ernie4_5_VLMoeImageProcessor (model-spec §10.1), as transformers serializes them.
IMAGE_PROCESSOR_CONFIG: dict[str, Any] = {
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": list(OPENAI_CLIP_MEAN),
    "image_processor_type": "Ernie4_5_VLMoeImageProcessor",
    "image_std": list(OPENAI_CLIP_STD),
    "merge_size": 2,
    "patch_size": 14,
    "resample": 3,
    "rescale_factor": 1 / 255,
    "size": {"longest_edge": 28 * 28 * 6177, "shortest_edge": 56 * 56},
    "temporal_patch_size": 1,
}

# Defaults of Ernie4_5_VLMoeVideoProcessor (model-spec §11.1).
VIDEO_PROCESSOR_CONFIG: dict[str, Any] = {
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "do_sample_frames": True,
    "draw_on_frames": True,
    "font": FONT_NAME,
    "image_mean": list(OPENAI_CLIP_MEAN),
    "image_std": list(OPENAI_CLIP_STD),
    "max_frames": 180,
    "merge_size": 2,
    "min_frames": 16,
    "patch_size": 14,
    "resample": 3,
    "rescale_factor": 1 / 255,
    "return_metadata": False,
    "size": {"longest_edge": 1196 * 28 * 28, "shortest_edge": 299 * 28 * 28},
    "temporal_patch_size": 2,
    "video_processor_type": "Ernie4_5_VLMoeVideoProcessor",
}


def _dump(obj: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def write_processor_files(dst: str | Path, font: str | Path | None = None,
                          video_overrides: Mapping[str, Any] | None = None) -> None:
    """Write the processor files of a checkpoint folder so that both ``Processor.from_pretrained`` and
    ``transformers.AutoProcessor.from_pretrained`` (5.23.0, ``Ernie4_5_VLMoeProcessor``) load it.
    ``video_overrides``: keys of the video processor config that differ from the model's defaults (the demo
    checkpoint's ``size``).

    Files: ``processor_config.json`` (nested image/video processor configs, the v5 layout), the legacy
    ``preprocessor_config.json`` / ``video_preprocessor_config.json`` (same values), ``chat_template.jinja`` (the
    cleaned ERNIE template) and the timestamp font ``Roboto-Regular.ttf`` (``font`` or the packaged Roboto).
    The tokenizer files come from :func:`ernie_vl.tokenizer_tiny.write_tiny_tokenizer`.
    """
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    video = {**VIDEO_PROCESSOR_CONFIG, **dict(video_overrides or {})}
    _dump(
        {
            "image_processor": IMAGE_PROCESSOR_CONFIG,
            "processor_class": "Ernie4_5_VLMoeProcessor",
            "video_processor": video,
        },
        dst / "processor_config.json",
    )
    _dump({**IMAGE_PROCESSOR_CONFIG, "processor_class": "Ernie4_5_VLMoeProcessor"}, dst / "preprocessor_config.json")
    _dump({**video, "processor_class": "Ernie4_5_VLMoeProcessor"}, dst / "video_preprocessor_config.json")
    (dst / "chat_template.jinja").write_text(DEFAULT_CHAT_TEMPLATE, encoding="utf-8")
    src_font = Path(font) if font is not None else PACKAGED_FONT
    if not src_font.is_file():
        raise FileNotFoundError(f"timestamp font not found: {src_font}")
    target = dst / FONT_NAME
    if not (target.exists() and target.samefile(src_font)):
        shutil.copyfile(src_font, target)


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ProcessingError(f"invalid JSON ({e})", str(path)) from e


def _load_chat_template(path: Path, processor_config: Mapping[str, Any]) -> str | None:
    """The checkpoint's chat template: chat_template.jinja, chat_template.json, processor or tokenizer config."""
    if (path / "chat_template.jinja").is_file():
        return (path / "chat_template.jinja").read_text(encoding="utf-8")
    data = _read_json(path / "chat_template.json")
    if data and data.get("chat_template"):
        return data["chat_template"]
    if processor_config.get("chat_template"):
        return processor_config["chat_template"]
    tok_cfg = _read_json(path / "tokenizer_config.json") or {}
    template = tok_cfg.get("chat_template")
    if isinstance(template, list):  # named templates: use "default"
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    return template
