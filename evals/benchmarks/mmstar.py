"""MMStar (val, 1,500 four-option questions; 6 categories × 3 sub-categories) — benchmarks.md §1.1, §2.4.

Formats read:

* VLMEvalKit TSV ``MMStar.tsv``: ``index``, ``image``, ``question``, ``A``-``D``, ``answer`` (letter),
  ``category``, ``l2-category``.
* Hugging Face ``Lin-Chen/MMStar``: one ``mmstar.parquet`` (split ``val``) or ``[data/]val-*.parquet``
  shards: ``index``, ``question`` (the options are part of it: ``"…\\nOptions: A: x, B: y, C: z, D: w"``),
  ``image``, ``answer``, ``category``, ``l2_category``, ``meta_info``. The options are parsed back out of the
  question for VLMEvalKit's prompt and its option-text matching.

Prompt: lmms-eval ``tasks/mmstar/utils.py mmstar_doc_to_text`` — the question with its options as the HF copy
stores it (rebuilt that way for TSV rows), stripped, + ``"\\nAnswer with the option's letter from the given
choices directly"`` (no final period, as in the YAML); VLMEvalKit ``ImageMCQDataset.build_prompt`` on the bare
question and the options.

Scoring — MMStar's authors evaluate with VLMEvalKit, so ``official`` = ``vlmevalkit``: ``can_infer`` (``Z`` or
nothing = wrong), accuracy = mean over questions, also per category and per sub-category (``report_acc``).
lmms-eval: ``extract_mcq_answer`` over A–D against the upper-cased answer, and its aggregation
``mmstar_aggregate_results``: every number is a *macro* mean over sub-categories (a category's accuracy is the
mean of its sub-categories' accuracies; the overall ``accuracy`` is lmms-eval's ``average``, the mean over all
sub-categories).
"""

from __future__ import annotations

import re
from pathlib import Path

from evals.aggregate import (count_rows, decode_rows, group_by, macro_sums, mean_rows, metric_row, row_score,
                             traced_sums)
from evals.benchmarks.base import Benchmark, Layout, load_media
from evals.benchmarks.prompts import vlmevalkit_mcq_text
from evals.extract.choice import can_infer, extract_mcq_answer
from evals.flavors import LMMS_EVAL, OFFICIAL, VLMEVALKIT, check_flavor
from evals.media import image_from_struct
from evals.readers.hf_parquet import HF_LAYOUT, find_shards, iter_parquet, list_shards, require_columns
from evals.readers.values import RowError, check_answer_letter, option_columns, text
from evals.sample import Sample

LETTERS = ["A", "B", "C", "D"]
LMMS_SUFFIX = "\nAnswer with the option's letter from the given choices directly"
YES_NO_INSTRUCTION = " Please answer yes or no."
HF_FORMAT = f"{HF_LAYOUT}; Lin-Chen/MMStar: mmstar.parquet (split 'val')"
_OPTIONS_MARK = re.compile(r"\n?\s*Options:\s*")


def split_question(question: str) -> tuple[str, dict[str, str]]:
    """``("bare question", {letter: text})`` from ``"…\\nOptions: A: x, B: y, C: z, D: w"``.

    Each option runs up to the next ``", <letter>: "`` in A, B, C, D order (option texts keep their own commas).
    A question without ``Options:`` is returned as is with no options.
    """
    match = _OPTIONS_MARK.search(question)
    if not match or not question[match.end():].startswith("A:"):
        return question, {}
    bare, rest = question[:match.start()], question[match.end():]
    options: dict[str, str] = {}
    for i, letter in enumerate(LETTERS):
        if not rest.startswith(f"{letter}:"):
            break
        rest = rest[len(letter) + 1:]
        nxt = rest.find(f", {LETTERS[i + 1]}:") if i + 1 < len(LETTERS) else -1
        options[letter] = (rest if nxt == -1 else rest[:nxt]).strip()
        rest = "" if nxt == -1 else rest[nxt + 2:]
    return bare.strip(), options


def _find_hf(path: Path, split: str) -> list[Path]:
    if path.is_dir():
        named = sorted(p for p in list_shards(path) if p.name.lower().startswith("mmstar"))
        if named:
            return named
    return find_shards(path, split, (), HF_FORMAT)


class MMStar(Benchmark):
    name = "mmstar"
    version = "mmstar/1"
    default_split = "val"
    tsv_patterns = ("MMStar.tsv", "MMStar*.tsv")

    def layouts(self):
        return [self.tsv_layout(("index", "question", "answer"), self._from_tsv, filter_split=False),
                Layout("hf-parquet", HF_FORMAT, lambda p: bool(list_shards(p)), self._read_hf)]

    def row_id(self, row, number):
        return text(row.get("index")) or str(number)

    def _sample(self, row, split, question, options, stored, media, err, subcategory):
        answer = text(row.get("answer"))
        if answer is None:
            raise RowError("missing answer")
        return Sample(sample_id=self.row_id(row, 0), benchmark=self.name, split=split, question=question,
                      options=options, media=media, targets=[check_answer_letter(answer.upper(), options)],
                      category=text(row.get("category")), subcategory=subcategory,
                      meta={"question_has_options": stored}, error=err)

    def _from_tsv(self, row, n, images, split):
        question = text(row.get("question")) or ""
        bare, parsed = split_question(question)
        options = option_columns(row, "ABCD") or parsed
        media, err = load_media(lambda: images.media(row))
        return self._sample(row, split, question, options, bool(parsed), media, err, text(row.get("l2-category")))

    def _read_hf(self, path: Path, split: str):
        shards = _find_hf(path, split)
        require_columns(shards, ("index", "question", "answer", "image"), HF_FORMAT)
        root = path if path.is_dir() else path.parent

        def convert(row, n):
            question = text(row.get("question")) or ""
            options = split_question(question)[1]
            if not options:
                raise RowError("question has no 'Options: A: …' part to read the options from")
            media, err = load_media(lambda: [image_from_struct(row.get("image"), root)])
            return self._sample(row, split, question, options, True, media, err, text(row.get("l2_category")))

        return self.convert_rows(((n, row) for n, (_, row) in enumerate(iter_parquet(shards))), convert, split)

    def prompt(self, sample, flavor):
        stored = sample.meta.get("question_has_options")
        if flavor == VLMEVALKIT:
            bare = split_question(sample.question)[0] if stored else sample.question
            return vlmevalkit_mcq_text(bare, sample.options)
        question = sample.question if stored else (
            f"{sample.question}\nOptions: " + ", ".join(f"{k}: {v}" for k, v in sample.options.items()))
        return question.strip().replace(YES_NO_INSTRUCTION, "") + LMMS_SUFFIX

    def score(self, record, prediction, flavor=OFFICIAL):
        rec, prediction = self.scoring_input(record, prediction, flavor)
        target = rec["targets"][0] if rec["targets"] else ""
        if flavor == LMMS_EVAL:
            letter = extract_mcq_answer(prediction, LETTERS)
        else:
            letter = can_infer(prediction, rec["options"])
            letter = letter if letter in rec["options"] else None
        return letter, float(letter is not None and letter == target.strip().upper())

    def aggregate(self, rows, flavor=OFFICIAL):
        check_flavor(flavor)
        rows = decode_rows(rows)
        if flavor != LMMS_EVAL:
            return (mean_rows(self.name, flavor, "accuracy", rows, by={"subcategory": lambda r: r.get("subcategory")})
                    + count_rows(self.name, flavor, rows))

        def macro(members):
            subs = group_by(members, lambda r: r.get("subcategory") or "-")
            means = [sum(map(row_score, m)) / len(m) for m in subs.values()]
            return 100.0 * sum(means) / len(means)

        def traced(category, members):  # the macro mean, with its per-unit sums for the bootstrap
            return traced_sums(metric_row(self.name, flavor, "accuracy", category, macro(members), len(members)),
                               *macro_sums(members, lambda r: r.get("subcategory") or "-", self.resampling_unit))

        out = [traced(None, rows)] if rows else []
        for category, members in group_by(rows, lambda r: r.get("category")).items():
            out.append(traced(str(category), members))
        out += [r for r in mean_rows(self.name, flavor, "accuracy", rows,
                                     by={"subcategory": lambda r: r.get("subcategory")})
                if r["metric"] == "accuracy_by_subcategory"]
        return out + count_rows(self.name, flavor, rows)


BENCHMARK = MMStar()
