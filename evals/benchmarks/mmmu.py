"""MMMU (validation) — benchmarks.md §1.1, §2.5.

Formats read:

* Hugging Face ``MMMU/MMMU`` (one config folder per subject: ``Art/validation-*.parquet``) or the merged
  ``lmms-lab/MMMU`` (``data/validation-*.parquet``): ``id`` (``validation_Art_1``), ``question`` with
  ``<image n>`` tags, ``options`` (a *string* holding a Python list), ``answer``, ``question_type``,
  ``image_1``..``image_7``, ``subfield``, ``img_type``.
* VLMEvalKit TSV ``MMMU_DEV_VAL.tsv``: ``index``, ``question``, ``A``..``I``, ``answer``, ``image`` (a list
  literal of base64 strings for several images), ``category``, ``split`` (``dev``/``validation``).

Prompt: lmms-eval ``tasks/mmmu/utils.py`` ``doc_to_messages`` (options as ``A. …``, the YAML
multiple-choice / open prompt, text interleaved at ``<image n>`` with the images in sorted tag order);
VLMEvalKit ``MMMUDataset.build_prompt`` (``ImageMCQDataset`` text split at ``<image n>``; empty text
pieces dropped).

Scoring: official / lmms-eval → :func:`evals.metrics.mmmu` (official rules; unparsed = wrong instead of
a random letter; lmms-eval's copy also accepts ``X `` and ``X.``); vlmevalkit → ``can_infer``, with
open questions turned into VLMEvalKit's pseudo multiple choice (A = the gold text, B = "Other
Answers", ``MMMU_preproc``). Aggregation: accuracy overall, per subject, per discipline.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from evals.aggregate import count_rows, decode_rows, mean_rows, meta_field
from evals.benchmarks.base import Benchmark, load_media
from evals.benchmarks.prompts import media_part, text_part, vlmevalkit_mcq_text
from evals.extract.choice import can_infer
from evals.flavors import VLMEVALKIT, OFFICIAL, check_flavor
from evals.media import image_from_struct
from evals.metrics.mmmu import MULTIPLE_CHOICE, gold_answers, mmmu
from evals.readers.tsv import TsvImages
from evals.readers.values import RowError, check_answer_letter, option_columns, options_from_list, parse_list, text
from evals.sample import Sample

DOMAIN_OF_SUBJECT = {
    subject: domain
    for domain, subjects in {
        "Art and Design": ["Art", "Art_Theory", "Design", "Music"],
        "Business": ["Accounting", "Economics", "Finance", "Manage", "Marketing"],
        "Science": ["Biology", "Chemistry", "Geography", "Math", "Physics"],
        "Health and Medicine": ["Basic_Medical_Science", "Clinical_Medicine", "Diagnostics_and_Laboratory_Medicine",
                                "Pharmacy", "Public_Health"],
        "Humanities and Social Science": ["History", "Literature", "Sociology", "Psychology"],
        "Tech and Engineering": ["Agriculture", "Architecture_and_Engineering", "Computer_Science", "Electronics",
                                 "Energy_and_Power", "Materials", "Mechanical_Engineering"],
    }.items()
    for subject in subjects
}
LMMS_MC_PROMPT = "Answer with the option's letter from the given choices directly."
LMMS_OPEN_PROMPT = "Answer the question using a single word or phrase."
_TAG = re.compile(r"<image (\d+)>")


def subject_of(sample_id: str) -> str | None:
    """``validation_Art_Theory_12`` → ``Art_Theory`` (the official ``extract_subset_name`` rule)."""
    parts = sample_id.split("_")
    return "_".join(parts[1:-1]) or None if len(parts) > 2 else None


class MMMU(Benchmark):
    name = "mmmu"
    version = "mmmu-val/1"
    default_split = "validation"
    tsv_patterns = ("MMMU_DEV_VAL.tsv", "MMMU*.tsv")

    def layouts(self):
        return [self.tsv_layout(("index", "question", "answer"), self._from_tsv),
                self.hf_layout(("id", "question", "options", "answer", "question_type"), self._from_hf)]

    def row_id(self, row, number):
        return text(row.get("id")) or text(row.get("index")) or f"row{number}"

    def _sample(self, sample_id, split, question, options, answer, question_type, media, err, subject, extra):
        if answer is None:
            raise RowError("missing answer")
        if question_type == MULTIPLE_CHOICE:
            if len(options) < 2:
                raise RowError(f"multiple-choice question with {len(options)} option(s)")
            targets = [check_answer_letter(answer, options)]
        else:
            targets = gold_answers(answer)
        meta = {"question_type": question_type, "answer_raw": answer,
                "domain": DOMAIN_OF_SUBJECT.get(subject or ""), **extra}
        return Sample(sample_id=sample_id, benchmark=self.name, split=split, question=question, options=options,
                      media=media, targets=targets, category=subject, subcategory=extra.get("subfield"),
                      meta=meta, error=err)

    def _from_hf(self, row, n, root: Path, split):
        sample_id = text(row["id"])
        options = options_from_list([str(o) for o in parse_list(row.get("options") or "[]")])
        question = text(row.get("question")) or ""
        qtype = text(row.get("question_type")) or "multiple-choice"
        # lmms-eval mmmu_doc_to_visual: the tags of question + options, sorted and de-duplicated
        prompt_text = question + "\n" + "\n".join(options.values())
        tags = sorted({int(t) for t in _TAG.findall(prompt_text)}, key=lambda k: f"image_{k}")
        media, err = load_media(lambda: [image_from_struct(row.get(f"image_{k}"), root, f"image_{k}") for k in tags])
        return self._sample(sample_id, split, question, options, text(row.get("answer")), qtype, media, err,
                            subject_of(sample_id), {"image_tags": tags, "subfield": text(row.get("subfield")),
                                                    "img_type": text(row.get("img_type"))})

    def _from_tsv(self, row, n, images: TsvImages, split):
        options = option_columns(row, "ABCDEFGHI")
        qtype = MULTIPLE_CHOICE if options else "open"
        media, err = load_media(lambda: images.media(row))
        sample_id = text(row.get("id")) or text(row["index"])
        subject = text(row.get("category")) or subject_of(sample_id)
        return self._sample(sample_id, text(row.get("split")) or split, text(row.get("question")) or "", options,
                            text(row.get("answer")), qtype, media, err, subject,
                            {"image_tags": list(range(1, len(media) + 1)), "index": text(row["index"]),
                             "subfield": text(row.get("l2-category"))})

    def prompt(self, sample, flavor):
        if flavor == VLMEVALKIT:
            return vlmevalkit_mcq_text(sample.question, sample.options)
        if sample.meta.get("question_type") == MULTIPLE_CHOICE:
            options = "\n".join(f"{k}. {v}" for k, v in sample.options.items())
            return f"{sample.question}\n{options}\n\n{LMMS_MC_PROMPT}"
        return f"{sample.question}\n\n{LMMS_OPEN_PROMPT}"

    def build_messages(self, sample, flavor=OFFICIAL):
        check_flavor(flavor)
        text_all = self.prompt(sample, flavor)
        content: list[dict] = []
        if flavor == VLMEVALKIT:
            # split_MMMU: "<image k>" → the k-th image of the row
            tags = sample.meta.get("image_tags") or list(range(1, len(sample.media) + 1))
            pieces = text_all.split("<image ")
            if len(pieces) == 1:
                return [{"role": "user", "content": [media_part(m) for m in sample.media] + [text_part(text_all)]}]
            if pieces[0]:
                content.append(text_part(pieces[0]))
            for piece in pieces[1:]:
                match = re.match(r"(\d+)>", piece)
                if match and int(match.group(1)) in tags:
                    content.append(media_part(sample.media[tags.index(int(match.group(1)))]))
                    rest = piece[match.end():]
                else:
                    rest = "<image " + piece
                if rest:
                    content.append(text_part(rest))
            return [{"role": "user", "content": content}]
        # lmms-eval doc_to_messages: placeholders in text order get the images in sorted tag order
        segments = re.sub(r"<image [1-7]>", "<image>", text_all).split("<image>")
        for i, medium in enumerate(sample.media):
            if i < len(segments) - 1 and segments[i].strip():
                content.append(text_part(segments[i].strip()))
            content.append(media_part(medium))
        content.append(text_part(segments[-1].strip()))
        return [{"role": "user", "content": content}]

    def score(self, record, prediction, flavor=OFFICIAL):
        rec, prediction = self.scoring_input(record, prediction, flavor)
        qtype = rec["meta"].get("question_type", MULTIPLE_CHOICE)
        if flavor == VLMEVALKIT:
            if qtype == MULTIPLE_CHOICE:
                letter = can_infer(prediction, rec["options"])
                letter = letter if letter in rec["options"] else None
                return letter, float(letter is not None and letter in rec["targets"])
            pseudo = {"A": str(rec["meta"].get("answer_raw", rec["targets"][0] if rec["targets"] else "")),
                      "B": "Other Answers"}
            letter = can_infer(prediction, pseudo)
            letter = letter if letter in pseudo else None
            return letter, float(letter == "A")
        out = mmmu(prediction, qtype, list(rec["options"].values()), rec["targets"], flavor=flavor)
        parsed = out["parsed_pred"]
        if isinstance(parsed, list):
            parsed = json.dumps(parsed, ensure_ascii=False) if parsed else None
        return parsed, float(out["correct"])

    def aggregate(self, rows, flavor=OFFICIAL):
        check_flavor(flavor)
        rows = decode_rows(rows)
        return (mean_rows(self.name, flavor, "accuracy", rows, by={"domain": meta_field("domain")})
                + count_rows(self.name, flavor, rows))


BENCHMARK = MMMU()
