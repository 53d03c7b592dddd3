"""Video-MME (900 videos, 2,700 questions; without subtitles) — benchmarks.md §1.2.

Format read: the Hugging Face ``lmms-lab/Video-MME`` folder — ``videomme/test-*.parquet`` with
``video_id``, ``duration`` (short/medium/long), ``domain``, ``sub_category``, ``videoID`` (YouTube id),
``question_id`` (``001-1``), ``task_type``, ``question``, ``options`` (``["A. …", …]``), ``answer`` — and
the videos unpacked from ``videos_chunked_*.zip`` as ``data/<videoID>.mp4`` (``.MP4``/``.mkv`` also
accepted, as in lmms-eval). A missing video makes that question an error sample (lmms-eval exits).

Prompt: lmms-eval ``videomme_doc_to_text`` (its "…based on the video and the subtitles…" wording is
kept) + the YAML post-prompt; VLMEvalKit ``VideoMME.build_prompt`` with ``video_llm=True``
(``FRAMES_TMPL_NOSUB`` then ``Question: …\\nAnswer: ``).

Scoring: official ``eval_your_results.py`` — first ``[ABCD]`` after removing prefixes; an unanswered
question (nothing extracted) is **left out of the denominator**, as the official script does (rows with
a pipeline error still count as wrong); lmms-eval ``extract_mcq_answer``; vlmevalkit its own regex.
Aggregation: accuracy overall, per domain (category), per duration, task type and sub-category.
"""

from __future__ import annotations

import re
from pathlib import Path

from evals.aggregate import count_rows, decode_rows, has_error, mean_rows, meta_field, metric_row
from evals.benchmarks.base import Benchmark, load_media
from evals.benchmarks.prompts import LMMS_MCQ_SUFFIX, media_part, text_part
from evals.extract.video import videomme_lmms_eval, videomme_official, videomme_vlmevalkit
from evals.flavors import LMMS_EVAL, OFFICIAL, VLMEVALKIT, check_flavor
from evals.media import MediaError, find_video, video_from_path
from evals.readers.hf_parquet import HF_LAYOUT
from evals.readers.values import LETTERS, RowError, check_answer_letter, parse_list, text
from evals.sample import Sample

LAYOUT = f"{HF_LAYOUT} (videomme/test-*.parquet) with the videos in data/<videoID>.mp4"
LMMS_INSTRUCTION = ("Select the best answer to the following multiple-choice question based on the video and the "
                    "subtitles. Respond with only the letter (A, B, C, or D) of the correct option.")
VLMK_TEMPLATE = ("\nThese are the frames of a video. Select the best answer to the following multiple-choice "
                 "question based on the video. Respond with only the letter (A, B, C, or D) of the correct option.\n")
_VIDEO_DIRS = ("data", "videos", "video", ".")
_OPTION_PREFIX = re.compile(r"^([A-Z])\.\s*(.*)$", re.DOTALL)


def parse_options(items: list) -> dict[str, str]:
    """``["A. cat", "B. dog"]`` → ``{"A": "cat", "B": "dog"}`` (unprefixed items are lettered by position)."""
    out = {}
    for i, item in enumerate(items):
        match = _OPTION_PREFIX.match(str(item).strip())
        if match:
            out[match.group(1)] = match.group(2)
        else:
            out[LETTERS[i]] = str(item)
    return out


class VideoMME(Benchmark):
    name = "videomme"
    version = "videomme-wo-sub/1"
    unit_name = "video"  # the questions asked about one video (``group``)
    default_split = "test"
    video_sampling = {"num_frames": 32}
    short_video = {VLMEVALKIT: "uniform_steps"}  # VideoMME.save_video_frames: int(i * n_frames / (nframe + 1))

    def layouts(self):
        return [self.hf_layout(("videoID", "question_id", "question", "options", "answer"), self._from_hf,
                               configs=("videomme",), description=LAYOUT)]

    def row_id(self, row, number):
        return text(row.get("question_id")) or f"row{number}"

    def _from_hf(self, row, n, root: Path, split):
        option_lines = [str(o) for o in parse_list(row.get("options"))]
        options = parse_options(option_lines)
        answer = text(row.get("answer"))
        if answer is None:
            raise RowError("missing answer")
        video_id = text(row.get("videoID"))
        if video_id is None:
            raise RowError("missing videoID")

        def video():
            for folder in _VIDEO_DIRS:
                found = find_video(root / folder, video_id)
                if found is not None:
                    return [video_from_path(found)]
            raise MediaError(f"video file not found: {root / 'data' / (video_id + '.mp4')}")

        media, err = load_media(video)
        return Sample(sample_id=text(row["question_id"]), benchmark=self.name, split=split,
                      question=text(row.get("question")) or "", options=options, media=media,
                      targets=[check_answer_letter(answer, options)], category=text(row.get("domain")),
                      subcategory=text(row.get("sub_category")), group=video_id,
                      meta={"duration": text(row.get("duration")), "task_type": text(row.get("task_type")),
                            "video_id": text(row.get("video_id")), "url": text(row.get("url")),
                            "option_lines": option_lines},
                      error=err)

    def prompt(self, sample, flavor):
        # both harnesses join the option strings as stored ("A. Black.")
        lines = "\n".join(sample.meta.get("option_lines") or [f"{k}. {v}" for k, v in sample.options.items()])
        if flavor == VLMEVALKIT:
            return f"Question: {sample.question}\n{lines}\nAnswer: "
        return f"{LMMS_INSTRUCTION}\n{sample.question}\n{lines}\n{LMMS_MCQ_SUFFIX}"

    def build_messages(self, sample, flavor=OFFICIAL):
        check_flavor(flavor)
        if flavor != VLMEVALKIT:
            return super().build_messages(sample, flavor)
        content = [media_part(m) for m in sample.media] + [text_part(VLMK_TEMPLATE), text_part(self.prompt(sample, flavor))]
        return [{"role": "user", "content": content}]

    def score(self, record, prediction, flavor=OFFICIAL):
        rec, prediction = self.scoring_input(record, prediction, flavor)
        extract = {OFFICIAL: videomme_official, LMMS_EVAL: videomme_lmms_eval, VLMEVALKIT: videomme_vlmevalkit}[flavor]
        letter = extract(prediction)
        target = rec["targets"][0] if rec["targets"] else ""
        return letter, float(letter is not None and letter.lower() == target.lower())

    def aggregate(self, rows, flavor=OFFICIAL):
        check_flavor(flavor)
        rows = decode_rows(rows)
        counted = rows
        if flavor == OFFICIAL:  # eval_your_results.py divides by the answered questions
            counted = [r for r in rows if has_error(r) or r.get("extracted") not in (None, "")]
        out = mean_rows(self.name, flavor, "accuracy", counted,
                        by={"duration": meta_field("duration"), "task_type": meta_field("task_type"),
                            "subcategory": lambda r: r.get("subcategory")})
        out.append(metric_row(self.name, flavor, "answered", None, len(counted), len(rows)))
        return out + count_rows(self.name, flavor, rows)


BENCHMARK = VideoMME()
