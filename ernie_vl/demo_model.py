"""The embedded demo checkpoint: the tiny architecture trained on the synthetic ``demo`` task, shipped in the package.

`ernie-vl eval` and `ernie-vl serve` use it when no `--model` is given: it answers the ``demo`` benchmark's questions
(colours, shapes, counts, positions in pictures; a moving dot or a colour change in a short clip) and a plain "What
colour is the square?" about a picture of one. The weights (`demo_model.safetensors` next to this file, fused HF
layout, float32) were trained by ``python -m ernie_vl_cli.train_demo``; the rest of the folder — config, tokenizer,
processor files, chat template — is what `make_tiny` writes for the ``demo`` config, so the folder is built on first
use under $ERNIE_VL_HOME like the random tiny checkpoint (`ernie_vl.tiny.default_model_path`), which stays the
model of the tests.
"""

from __future__ import annotations

from pathlib import Path

from .config import ModelConfig, named_config

DEMO_CONFIG = "demo"  # the name-table entry of its shape
DEMO_MODEL_NAME = "ernie-vl-demo"  # the model id `ernie-vl serve` gives it
DEMO_VERSION = "1"  # bump with the weights or the shape: cached folders of older versions are not reused
WEIGHTS = Path(__file__).resolve().parent / "demo_model.safetensors"
# NOTE: the one processor setting that differs from the model's: video frames smaller than 299*28*28 pixels keep their
# size (down to the image processor's 56*56) instead of being enlarged to it. The demo's 112x112 clips then cost 16
# tokens per frame pair, not 324, which keeps training on 2 CPU cores to minutes; larger videos are processed as
# the real model processes them.
VIDEO_OVERRIDES = {"size": {"longest_edge": 1196 * 28 * 28, "shortest_edge": 56 * 56}}


def demo_config() -> ModelConfig:
    return named_config(DEMO_CONFIG)


def trained_state(model, cfg: ModelConfig) -> dict:
    """The weights of `model` a checkpoint of `cfg` stores (fused HF names; the tied head left out), float32."""
    from .weights import expected_tensors

    state = model.state_dict()
    return {k: state[k].detach().float().cpu().contiguous() for k in expected_tensors(cfg)}


def save_weights(state: dict, path: str | Path = WEIGHTS) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={"format": "pt"})
    return path


def write_demo_checkpoint(dst: str | Path, weights: str | Path = WEIGHTS) -> Path:
    """A complete checkpoint folder at `dst`: `make_tiny`'s files for the demo config, with the weights of
    `weights` (a safetensors file holding exactly the tensors of that config, with their shapes)."""
    from safetensors.torch import load_file

    weights = Path(weights)
    if not weights.is_file():
        raise FileNotFoundError(f"demo weights {weights} not found (train them: python -m ernie_vl_cli.train_demo)")
    trained = load_file(str(weights))

    def use_trained(state: dict, _dst) -> None:
        missing, unexpected = sorted(set(state) - set(trained)), sorted(set(trained) - set(state))
        wrong = sorted(k for k in set(state) & set(trained) if trained[k].shape != state[k].shape)
        if missing or unexpected or wrong:
            raise ValueError(f"{weights} does not fit the {DEMO_CONFIG!r} config: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}, wrong shape {wrong[:5]}")
        state.update({k: v.float() for k, v in trained.items()})

    return init_demo_checkpoint(dst, edit_state=use_trained)


def init_demo_checkpoint(dst: str | Path, seed: int = 0, edit_state=None) -> Path:
    """A demo-shaped checkpoint folder with random weights of `seed` (what training starts from), or with the
    weights `edit_state(state, dst)` puts in (see `make_tiny`); its processor files take `VIDEO_OVERRIDES`."""
    from .processor_files import write_processor_files
    from .tiny import make_tiny

    dst = make_tiny(dst, seed=seed, config=demo_config(), edit_state=edit_state)
    write_processor_files(dst, video_overrides=VIDEO_OVERRIDES)
    return dst


def demo_model_path() -> Path:
    """The embedded demo checkpoint, built once per machine under $ERNIE_VL_HOME (default ~/.cache/ernie_vl)."""
    from .tiny import embedded_checkpoint

    return embedded_checkpoint(f"demo-v{DEMO_VERSION}", write_demo_checkpoint)
