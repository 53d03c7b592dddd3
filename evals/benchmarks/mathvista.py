"""MathVista (testmini, 1,000 problems) — benchmarks.md §1.1, §2.10.

Formats read:

* Hugging Face ``AI4Math/MathVista`` (``data/testmini-*.parquet``): ``pid``, ``question``, ``decoded_image``
  (``image`` is the file name), ``choices`` (list or null), ``unit``, ``precision`` (float), ``answer``,
  ``question_type`` (``multi_choice`` / ``free_form``), ``answer_type`` (``text`` / ``integer`` / ``float`` /
  ``list``), ``metadata`` (``task``, ``skills``, ``category``, ``context``, ``grade``, ``language``, ``source``,
  ...), ``query`` (the published prompt: hint + question + choices).
* VLMEvalKit TSV ``MathVista_MINI.tsv``: ``index``, ``image``, ``question`` (the published query), ``answer`` (the
  choice text for multiple choice), ``answer_option`` (its letter), ``choices`` (a list literal),
  ``question_type``, ``answer_type``, ``precision``, ``unit``, ``task``, ``skills`` (a list literal), optional
  ``category`` / ``context`` / ``grade`` / ``language`` / ``source``.

Prompt: official and vlmevalkit → the published ``query`` (what the authors' ``generate_response.py`` sends and
VLMEvalKit's ``question``); lmms-eval → ``create_one_query`` with its default ``mathvista_testmini_format`` settings
(``shot_type="format-prompt"``, zero-shot: question (+ unit), ``A. choice`` lines, a short answer-format hint).
The TSV holds only the query, so lmms-eval prompts from a TSV use it too.

Scoring: :mod:`evals.extract.mathvista` — rule extraction, and with an LLM judge (``ernie-vl score --judge-url``)
the flavor's answer-extraction prompt for the answers its rule cannot settle. ``judge_max_tokens`` 256 is
lmms-eval's (the authors' client allows 1024, VLMEvalKit 128; extraction replies are a few tokens).
Aggregation: accuracy overall, per ``task`` (the category), per skill (a problem counts for each of its skills) and
by question type, answer type, grade, context, language, source and MathVista's own ``category``.
"""

from __future__ import annotations

from pathlib import Path

from evals.aggregate import count_rows, decode_rows, mean_row, mean_rows, meta_field
from evals.benchmarks.base import Benchmark, load_media
from evals.extract.mathvista import (MULTI_CHOICE, judge_prompt, judged_score, needs_judge, rule_score,
                                     vlmevalkit_judge_prompt)
from evals.flavors import LMMS_EVAL, OFFICIAL, VLMEVALKIT, check_flavor
from evals.media import image_from_struct
from evals.readers.tsv import TsvImages
from evals.readers.values import RowError, options_from_list, parse_list, text
from evals.sample import Sample

_BY = ("question_type", "answer_type", "grade", "context", "language", "source", "problem_category")
_FORMAT_HINTS = {
    MULTI_CHOICE: "Answer with the option's letter from the given choices directly.",
    "integer": "Answer the question using a single integer number.",
    ("float", 1): "Answer the question using a single floating-point number with one decimal place.",
    ("float", 2): "Answer the question using a single floating-point number with two decimal places.",
    "list": "Answer the question using a Python list.",
}


def _precision(value) -> float | None:
    """The published precision (a float in the HF files, text in the TSV), kept a float as lmms-eval sees it."""
    value = text(value)  # None for null/NaN/empty; "2" for 2.0
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        raise RowError(f"precision {value!r} is not a number") from None


class MathVista(Benchmark):
    name = "mathvista"
    version = "mathvista-testmini/1"
    default_split = "testmini"
    tsv_patterns = ("MathVista_MINI.tsv", "MathVista*.tsv")
    judged = True
    judge_max_tokens = 256

    def layouts(self):
        return [self.tsv_layout(("index", "question", "answer"), self._from_tsv, filter_split=False),
                self.hf_layout(("pid", "question", "answer", "question_type", "answer_type", "query"),
                               self._from_hf)]

    def row_id(self, row, number):
        return text(row.get("pid")) or text(row.get("index")) or f"row{number}"

    def _sample(self, sample_id, split, question, media, err, *, answer, choices, question_type, answer_type,
                precision, unit, query, answer_option, info, query_only):
        if answer is None:
            raise RowError("missing answer")
        if question_type not in (MULTI_CHOICE, "free_form"):
            raise RowError(f"question_type {question_type!r} is neither multi_choice nor free_form")
        options = options_from_list(choices) if question_type == MULTI_CHOICE else {}
        if question_type == MULTI_CHOICE:
            if answer not in choices:
                raise RowError(f"answer {answer!r} is not one of the choices {choices}")
            answer_option = answer_option or chr(65 + choices.index(answer))
        skills = [str(s) for s in parse_list(info.get("skills"))] if info.get("skills") is not None else []
        meta = {"question_type": question_type, "answer_type": answer_type, "choices": choices or None,
                "precision": precision, "unit": unit, "query": query, "answer": answer,
                "answer_option": answer_option, "skills": skills, "query_only": query_only,
                **{k: text(info.get(k)) for k in ("grade", "context", "language", "source")},
                "problem_category": text(info.get("category"))}
        return Sample(sample_id=sample_id, benchmark=self.name, split=split, question=question, options=options,
                      media=media, targets=[answer], category=text(info.get("task")),
                      subcategory=text(info.get("context")), meta=meta, error=err)

    def _from_hf(self, row, n, root: Path, split):
        media, err = load_media(lambda: [image_from_struct(row.get("decoded_image"), root, "decoded_image")])
        info = row.get("metadata") or {}
        choices = [str(c) for c in parse_list(row.get("choices"))]
        return self._sample(text(row["pid"]), split, text(row.get("question")) or "", media, err,
                            answer=text(row.get("answer")), choices=choices,
                            question_type=text(row.get("question_type")), answer_type=text(row.get("answer_type")),
                            precision=_precision(row.get("precision")), unit=text(row.get("unit")),
                            query=text(row.get("query")) or "", answer_option=None, info=info, query_only=False)

    def _from_tsv(self, row, n, images: TsvImages, split):
        media, err = load_media(lambda: images.media(row))
        choices = [str(c) for c in parse_list(text(row.get("choices")))]
        query = text(row.get("question")) or ""
        qtype = text(row.get("question_type")) or (MULTI_CHOICE if choices else "free_form")
        return self._sample(text(row["index"]), split, query, media, err, answer=text(row.get("answer")),
                            choices=choices, question_type=qtype, answer_type=text(row.get("answer_type")) or
                            ("text" if qtype == MULTI_CHOICE else None),
                            precision=_precision(row.get("precision")), unit=text(row.get("unit")), query=query,
                            answer_option=text(row.get("answer_option")), info=row, query_only=True)

    # --- prompting --------------------------------------------------------------------------------

    def prompt(self, sample, flavor):
        check_flavor(flavor)
        meta = sample.meta
        if flavor != LMMS_EVAL or meta.get("query_only"):
            return meta["query"]
        # lmms-eval create_one_query(shot_type="format-prompt", shot_num=0)
        question = sample.question + (f" (Unit: {meta['unit']})" if meta.get("unit") else "")
        choices = "\n".join(f"{chr(65 + i)}. {c}" for i, c in enumerate(meta.get("choices") or []))
        if meta["question_type"] == MULTI_CHOICE:
            hint = _FORMAT_HINTS[MULTI_CHOICE]
        elif meta["answer_type"] == "float":
            # NOTE: lmms-eval leaves the hint unbound (an error) for precisions other than 1 and 2; we omit it
            hint = _FORMAT_HINTS.get(("float", meta.get("precision")), "")
        else:
            hint = _FORMAT_HINTS.get(meta["answer_type"], "")
        return "\n".join(e for e in (question, choices, hint) if e).strip()

    # --- scoring ----------------------------------------------------------------------------------

    def _problem(self, record) -> dict:
        meta = self.record(record)["meta"]
        return {k: meta.get(k) for k in ("question_type", "answer_type", "choices", "precision", "query", "answer",
                                         "answer_option")}

    def score(self, record, prediction, flavor=OFFICIAL):
        return rule_score("" if prediction is None else str(prediction), self._problem(record), flavor)

    def judge_prompt(self, record, prediction, flavor=OFFICIAL):
        problem = self._problem(record)
        prediction = "" if prediction is None else str(prediction)
        if not needs_judge(prediction, problem, flavor):
            return None
        if flavor == VLMEVALKIT:
            return vlmevalkit_judge_prompt(problem["query"], prediction)
        return judge_prompt(problem["query"], prediction.strip() if flavor == LMMS_EVAL else prediction)

    def score_judged(self, record, prediction, reply, flavor=OFFICIAL):
        return judged_score(reply, "" if prediction is None else str(prediction), self._problem(record), flavor)

    def aggregate(self, rows, flavor=OFFICIAL):
        check_flavor(flavor)
        rows = decode_rows(rows)
        out = mean_rows(self.name, flavor, "accuracy", rows, by={k: meta_field(k) for k in _BY})
        skills = sorted({s for r in rows for s in r["meta"].get("skills") or []})
        for skill in skills:
            members = [r for r in rows if skill in (r["meta"].get("skills") or [])]
            out.append(mean_row(self.name, flavor, "accuracy_by_skill", skill, members))
        return out + count_rows(self.name, flavor, rows)


BENCHMARK = MathVista()
