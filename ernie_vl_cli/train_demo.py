"""Train the embedded demo checkpoint: ``python -m ernie_vl_cli.train_demo [--out DIR] [--ship] [--steps N]``.

The training questions are drawn by the ``demo`` benchmark's own generator (:mod:`evals.data.demo_task`) with other
seeds, every scene of the packaged benchmark left out, written as a demo folder and read back by the benchmark's
reader; each prompt is built exactly as an evaluation builds it (the benchmark's messages for the flavor, its
post-prompt and frame policy, `Processor.prepare`) and the target is the answer the benchmark scores (option
letter, yes/no, word) closed by ``<|end_of_sentence|>``. A share of the questions is asked bare, without the
benchmark's answer format, and answered with a sentence ("The square is red."), which is how a chat user asks
`ernie-vl serve`. The loop is `ernie_vl.train` (loss on the answer tokens only, fixed seeds).

Outputs: ``--out DIR`` a complete checkpoint folder; ``--ship`` the package's weights file
(`ernie_vl.demo_model.WEIGHTS`, bump `DEMO_VERSION` with it). ``--eval`` then scores the packaged ``demo`` benchmark
with the trained model through the batch engine (no Ray) and prints its accuracy per category.
The full run (the defaults: 3,200 questions, 3,000 steps of 16) takes about 5 minutes of one CPU core and reaches
0.92 on the benchmark; ``--scale 0.1 --steps 60`` is a quick smoke run. Runs are seeded; a rerun reproduces the quality,
not the bits (see `ernie_vl.train`).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

TRAIN_SEED = 1  # the benchmark uses evals.data.demo_task.BENCHMARK_SEED
#: training questions per kind (harder kinds drawn more often)
TRAIN_COUNTS = {"colour": 300, "colour_short": 300, "shape": 400, "count": 700, "position": 400, "presence": 300,
                "which": 300, "direction": 200, "final_colour": 150, "change": 150}
BARE_SHARE = 0.25  # questions asked without the benchmark's answer format, answered with a sentence
FLAVOR = "official"


def training_items(proc, scale: float = 1.0, seed: int = TRAIN_SEED, counts: dict[str, int] | None = None,
                   log=print) -> list:
    """The training sequences (`ernie_vl.train.TrainItem`), built through the benchmark's reader and prompts:
    `counts` (default `TRAIN_COUNTS`) questions per kind, times `scale`."""
    import numpy as np

    from ernie_vl.tokenizer_spec import END_OF_SENTENCE
    from ernie_vl.train import with_answer
    from evals.benchmarks.prompts import user_turn
    from evals.data.demo_task import benchmark_set, draw_set, reply
    from evals.data.make_demo import write_set
    from evals.registry import get_benchmark

    held_out = frozenset(ex.scene for ex in benchmark_set())
    counts = {k: max(1, round(n * scale)) for k, n in (counts or TRAIN_COUNTS).items() if n}
    examples = {ex.record["id"]: ex for ex in draw_set(seed, counts, prefix="train-", exclude=held_out)}
    bench = get_benchmark("demo")
    policy = bench.video_policy(FLAVOR)
    eos = proc.tokenizer.token_to_id(END_OF_SENTENCE)
    bare = np.random.default_rng(seed).random(len(examples)) < BARE_SHARE
    items = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ernie-vl-demo-train-") as tmp:
        write_set(Path(tmp), list(examples.values()))
        for i, sample in enumerate(bench.load(tmp)):
            if sample.error:
                raise RuntimeError(f"training sample {sample.sample_id}: {sample.error}")
            ex = examples[sample.sample_id]
            if bare[i]:
                messages, answer = user_turn(sample, sample.question), ex.sentence
            else:
                messages, answer = bench.build_messages(sample, FLAVOR), reply(ex.record)
            prompt = proc.prepare(messages, source=sample.sample_id, video_sampling=policy)
            items.append(with_answer(prompt, proc.tokenizer.encode(answer) + [eos], proc.media_tokens))
    if log:
        log(f"{len(items)} training sequences ({int(bare.sum())} bare questions) in {time.perf_counter() - t0:.0f}s")
    return items


def evaluate(path, limit: int | None = None, flavor: str = FLAVOR) -> dict:
    """Score the packaged ``demo`` benchmark with the checkpoint at `path` through the batch engine (greedy, up to 32
    new tokens, as `ernie-vl eval`): {"accuracy", "n", "by_category": {category: accuracy}, "predictions": {id: text}}.
    """
    from ernie_vl import Processor, load_model
    from ernie_vl.engine import Engine
    from ernie_vl.generation import GenerationSettings
    from evals.registry import get_benchmark

    bench = get_benchmark("demo")
    samples = list(bench.load(None, limit))
    proc = Processor.from_pretrained(path)
    model = load_model(path)
    prompts = [proc.prepare(bench.build_messages(s, flavor), video_sampling=bench.video_policy(flavor))
               for s in samples]
    gens = Engine(model, reuse=False).generate(prompts, GenerationSettings.from_checkpoint(path, max_new_tokens=32))
    scores, cats, preds = [], {}, {}
    for s, g in zip(samples, gens):
        text = proc.decode(g.tokens, skip_special_tokens=True)
        preds[s.sample_id] = text
        _, score = bench.score(s.to_record(), text, flavor)
        scores.append(score)
        cats.setdefault(s.category, []).append(score)
    return {"accuracy": sum(scores) / len(scores), "n": len(scores), "predictions": preds,
            "by_category": {c: sum(v) / len(v) for c, v in sorted(cats.items())}}


def train_demo(out: str | Path, settings=None, scale: float = 1.0, counts: dict[str, int] | None = None,
               ship: bool = False, log=print) -> tuple[Path, list[float]]:
    """Train from the random `demo`-shaped weights of `settings.seed` (`ernie_vl.train.TrainSettings`, default: the
    shipped model's) on `counts` (default `TRAIN_COUNTS`) questions per kind, times `scale`; write the checkpoint
    folder `out` (and, with `ship`, the package's weights file). Returns `out` and the loss of every step."""
    from ernie_vl import Processor, load_model
    from ernie_vl.demo_model import (WEIGHTS, init_demo_checkpoint, save_weights, trained_state,
                                     write_demo_checkpoint)
    from ernie_vl.train import TrainSettings, train

    out = Path(out)
    settings = settings or TrainSettings()
    log = log or (lambda _message: None)
    with tempfile.TemporaryDirectory(prefix="ernie-vl-demo-init-") as tmp:
        init = init_demo_checkpoint(Path(tmp) / "init", seed=settings.seed)
        proc = Processor.from_pretrained(init)
        model = load_model(init, dtype="float32")
        items = training_items(proc, scale, counts=counts, log=log)
        losses = train(model, items, settings, pad_token_id=model.config.text.pad_token_id or 0, log=log, log_every=250)
        weights = save_weights(trained_state(model, model.config), Path(tmp) / "demo_model.safetensors")
        if out.exists():
            shutil.rmtree(out)
        write_demo_checkpoint(out, weights)
        if ship:
            shutil.copyfile(weights, WEIGHTS)
            log(f"wrote {WEIGHTS} ({WEIGHTS.stat().st_size} bytes); bump ernie_vl.demo_model.DEMO_VERSION")
    log(f"wrote the demo checkpoint to {out}")
    return out, losses


def main(argv: list[str] | None = None) -> int:
    import torch

    from ernie_vl.train import TrainSettings

    d = TrainSettings()
    p = argparse.ArgumentParser(prog="python -m ernie_vl_cli.train_demo", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="demo-checkpoint", help="checkpoint folder to write (replaced)")
    p.add_argument("--ship", action="store_true", help="also write the package's weights file")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--scale", type=float, default=1.0, help="share of the training questions to draw (default all)")
    p.add_argument("--seed", type=int, default=0, help="initial weights and batch order")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: the tiny shapes run fastest on one; the shipped weights were "
                        "trained so)")
    p.add_argument("--eval", action="store_true", help="score the packaged demo benchmark afterwards")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    settings = TrainSettings(steps=a.steps, batch_size=a.batch_size, lr=a.lr, seed=a.seed)
    out, _ = train_demo(a.out, settings, a.scale, ship=a.ship)
    if a.eval:
        res = evaluate(out)
        cats = ", ".join(f"{c} {v:.2f}" for c, v in res["by_category"].items())
        print(f"demo benchmark: accuracy {res['accuracy']:.3f} over {res['n']} questions ({cats})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
