"""The `ernie-vl` command line: make-tiny, convert, generate, eval, score, report, serve.

The top of the import graph: this package may import every part (ernie_vl, pipelines, serve); none of them imports
it. `python -m ernie_vl_cli ...` runs the same command line as `ernie-vl ...`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cmd_make_tiny(a) -> int:
    from ernie_vl.tiny import make_tiny

    path = make_tiny(a.dir, seed=a.seed, layout=a.layout)
    print(f"wrote a tiny random checkpoint ({a.layout} layout, seed {a.seed}) to {path}")
    return 0


def _cmd_convert(a) -> int:
    from ernie_vl.convert import convert

    to = convert(a.src, a.dst, to=a.to, dtype=a.dtype, config_format=a.config_format)
    print(f"converted {a.src} -> {a.dst} ({to} layout)")
    return 0


def _cmd_generate(a) -> int:
    import torch

    from ernie_vl.demo_model import demo_model_path
    from ernie_vl.generation import GenerationSettings
    from ernie_vl.processor import Processor
    from ernie_vl.weights import load_model

    path = Path(a.model) if a.model else demo_model_path()
    model = load_model(path, dtype=a.dtype, device=a.device)
    proc = Processor.from_pretrained(path)
    content = [{"type": "image", "image": p} for p in a.image]
    content += [{"type": "video", "video": p} for p in a.video]
    content.append({"type": "text", "text": a.prompt})
    inputs = proc.apply_chat_template(
        [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=True, return_dict=True,
        return_tensors="pt",
    )
    defaults = GenerationSettings.from_checkpoint(path, model.config)
    torch.manual_seed(a.seed)
    out = model.generate(
        **{k: v for k, v in inputs.items() if k not in ("video_metadata", "mm_token_type_ids", "moe_mm_token_type_ids")},
        max_new_tokens=a.max_new_tokens,
        do_sample=a.temperature > 0,
        temperature=a.temperature or 1.0,
        eos_token_id=list(defaults.eos_token_id),
        pad_token_id=defaults.pad_token_id,
    )
    n = inputs["input_ids"].shape[1]
    print(proc.batch_decode(out[:, n:], skip_special_tokens=True)[0])
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ernie-vl", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("make-tiny", help="write a tiny random checkpoint folder")
    s.add_argument("dir")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--layout", choices=["hf", "original"], default="hf")
    s.set_defaults(func=_cmd_make_tiny)

    s = sub.add_parser("convert", help="convert a checkpoint between the original and the fused HF layout")
    s.add_argument("src")
    s.add_argument("dst")
    s.add_argument("--to", choices=["hf", "original"], help="target layout (default: the other one)")
    s.add_argument("--dtype", help="cast floating tensors (routers stay float32)")
    s.add_argument("--config-format", choices=["hf", "original"], help="config.json format (default: as --to)")
    s.set_defaults(func=_cmd_convert)

    s = sub.add_parser("generate", help="answer one prompt (with optional images/videos)")
    s.add_argument("--model", help="checkpoint folder (default: the embedded demo checkpoint)")
    s.add_argument("--prompt", required=True)
    s.add_argument("--image", action="append", default=[], help="image path (repeatable)")
    s.add_argument("--video", action="append", default=[], help="video path (repeatable)")
    s.add_argument("--max-new-tokens", type=int, default=32)
    s.add_argument("--temperature", type=float, default=0.0)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--dtype", default=None)
    s.add_argument("--device", default=None)
    s.set_defaults(func=_cmd_generate)

    # the eval/score/report and serve commands are declared by the pipelines and serve packages themselves
    from pipelines.cli import add_eval_commands
    from serve.cli import add_serve_command

    add_eval_commands(sub)
    add_serve_command(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"ernie-vl {args.command}: error: {e}", file=sys.stderr)
        return 2
