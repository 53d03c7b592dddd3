"""MVBench (20 tasks × 200 questions) — benchmarks.md §1.2.

Format read: the ``OpenGVLab/MVBench`` folder as published — ``json/<task>.json`` (lists of
``{video, question, candidates, answer (text), [start, end]}``) and ``video/<source>/…`` (the unpacked
video zips). The source folder of each task follows VLMEvalKit's ``MVBench.type_data_list``
(``star/Charades_v1_480``, ``clevrer/video_validation``, …), falling back to lmms-eval's
``DATA_LIST`` names; ``episodic_reasoning`` is a folder of frames (``meta["data_type"] == "frame"``).
Tasks with ``start``/``end`` keep them in ``meta`` (seconds) for the frame sampler. A video that is not
found is an error sample (VLMEvalKit silently drops the row).

Prompt: lmms-eval ``mvbench_doc_to_text`` (``Question:{q}\\nOption:\\n(A) …\\n`` + ``Only give the best
option.\\n``); VLMEvalKit ``MVBench.build_prompt`` — a system prompt, ``Question: …\\nOptions:\\n(A) …``,
``\\nOnly give the best option.`` and the assistant prefill ``Best option:(``.

Scoring: official = MVBench ``check_ans`` (an empty prediction counts as correct — kept, see
:mod:`evals.extract.video`); lmms-eval ``mcq_acc`` (empty predictions left out of the denominator, as
``mvbench_aggregate_results`` does); vlmevalkit ``check_ans`` then ``can_infer``.
Aggregation: accuracy overall and per task, and ``accuracy_task_mean`` (the paper's average).
"""

from __future__ import annotations

from pathlib import Path

from evals.aggregate import (count_rows, decode_rows, group_by, has_error, macro_sums, mean_rows, metric_row,
                             row_score, traced_sums)
from evals.benchmarks.base import Benchmark, Layout, load_media
from evals.benchmarks.prompts import media_part, text_part
from evals.errors import DatasetError
from evals.extract.video import mvbench_check_ans, mvbench_first_token, mvbench_lmms_eval, mvbench_vlmevalkit
from evals.flavors import LMMS_EVAL, OFFICIAL, VLMEVALKIT, check_flavor
from evals.media import MediaError, video_from_path
from evals.readers.files import load_json
from evals.readers.values import LETTERS, RowError, parse_list, text
from evals.sample import Sample

LAYOUT = "the MVBench folder: json/<task>.json + video/<source>/... (OpenGVLab/MVBench with the video zips unpacked)"
SYSTEM = ("Carefully watch the video and pay attention to the cause and sequence of events, the detail and movement "
          "of objects, and the action and pose of persons. Based on your observations, select the best option that "
          "accurately addresses the question.\n")
PREFILL = "Best option:("
# task → candidate folders under video/ (VLMEvalKit first, then lmms-eval's DATA_LIST names)
TASK_FOLDERS = {
    "action_sequence": ("star/Charades_v1_480", "star/Charades_segment"),
    "action_prediction": ("star/Charades_v1_480", "star/Charades_segment"),
    "action_antonym": ("ssv2_video", "ssv2_video_mp4"),
    "fine_grained_action": ("Moments_in_Time_Raw/videos",),
    "unexpected_action": ("FunQA_test/test",),
    "object_existence": ("clevrer/video_validation",),
    "object_interaction": ("star/Charades_v1_480", "star/Charades_segment"),
    "object_shuffle": ("perception/videos",),
    "moving_direction": ("clevrer/video_validation",),
    "action_localization": ("sta/sta_video", "sta/sta_video_segment"),
    "scene_transition": ("scene_qa/video",),
    "action_count": ("perception/videos",),
    "moving_count": ("clevrer/video_validation",),
    "moving_attribute": ("clevrer/video_validation",),
    "state_change": ("perception/videos",),
    "fine_grained_pose": ("nturgbd", "nturgbd_convert"),
    "character_order": ("perception/videos",),
    "egocentric_navigation": ("vlnqa",),
    "episodic_reasoning": ("tvqa/frames_fps3_hq", "tvqa/video_fps3_hq_segment"),
    "counterfactual_inference": ("clevrer/video_validation",),
}
FRAME_TASKS = ("episodic_reasoning",)


class MVBench(Benchmark):
    name = "mvbench"
    version = "mvbench/1"
    default_split = "test"
    video_sampling = {"num_frames": 16}
    short_video = {VLMEVALKIT: "segment_midpoints"}  # MVBench.get_index: the middle of n equal segments

    def layouts(self):
        return [Layout("mvbench-release", LAYOUT, lambda p: p.is_dir() and (p / "json").is_dir(), self._read)]

    def _find_video(self, root: Path, task: str, name: str) -> Path:
        folders = TASK_FOLDERS.get(task, ()) + (task,)
        for base in (root / "video", root):
            for folder in folders:
                candidate = base / folder / name
                if candidate.exists():
                    return candidate
        raise MediaError(f"video not found: {root / 'video' / folders[0] / name}")

    def _read(self, path: Path, split: str):
        files = sorted((path / "json").glob("*.json"))
        if not files:
            raise DatasetError(path / "json", "no <task>.json files", LAYOUT)

        loaded = [(file.stem, load_json(file, LAYOUT)) for file in files]  # file-level errors raise now
        for file, (task, entries) in zip(files, loaded):
            if not isinstance(entries, list):
                raise DatasetError(file, "expected a JSON list of {video, question, candidates, answer}", LAYOUT)

        def rows():
            for task, entries in loaded:
                for i, entry in enumerate(entries):
                    yield i, {"task": task, "entry": entry}

        def convert(row, i):
            task, entry = row["task"], row["entry"]
            if not isinstance(entry, dict):
                raise RowError("entry is not an object")
            candidates = [str(c) for c in parse_list(entry.get("candidates"))]
            answer = text(entry.get("answer"))
            if answer is None:
                raise RowError("missing answer")
            if answer not in candidates:
                raise RowError(f"answer {answer!r} is not one of the candidates {candidates}")
            options = {LETTERS[k]: c for k, c in enumerate(candidates)}
            video = str(entry.get("video") or "")
            media, err = load_media(lambda: [video_from_path(self._find_video(path, task, video))])
            meta = {"answer_text": answer, "video": video, "data_type": "frame" if task in FRAME_TASKS else "video"}
            for key in ("start", "end"):
                if entry.get(key) is not None:
                    meta[key] = float(entry[key])
            return Sample(sample_id=f"{task}/{i}", benchmark=self.name, split=split,
                          question=text(entry.get("question")) or "", options=options, media=media,
                          targets=[LETTERS[candidates.index(answer)]], category=task, meta=meta, error=err)

        return self.convert_rows(rows(), convert, split)

    def row_id(self, row, number):
        return f"{row.get('task', 'task')}/{number}"

    def prompt(self, sample, flavor):
        if flavor == VLMEVALKIT:
            lines = "".join(f"({k}) {v}\n" for k, v in sample.options.items())
            return f"Question: {sample.question}\nOptions:\n{lines}".rstrip()
        lines = "".join(f"({k}) {v}\n" for k, v in sample.options.items())
        return f"Question:{sample.question}\nOption:\n{lines}Only give the best option.\n"

    def build_messages(self, sample, flavor=OFFICIAL):
        check_flavor(flavor)
        if flavor != VLMEVALKIT:
            return super().build_messages(sample, flavor)
        user = [media_part(m) for m in sample.media] + [text_part(self.prompt(sample, flavor)),
                                                        text_part("\nOnly give the best option.")]
        return [{"role": "system", "content": [text_part(SYSTEM)]},
                {"role": "user", "content": user},
                {"role": "assistant", "content": [text_part(PREFILL)]}]

    def score(self, record, prediction, flavor=OFFICIAL):
        rec, prediction = self.scoring_input(record, prediction, flavor)
        target = rec["targets"][0] if rec["targets"] else ""
        if flavor == LMMS_EVAL:
            got = mvbench_lmms_eval(prediction)
            letter = got if got in rec["options"] else None
            return letter, float(letter is not None and letter == target)
        if flavor == VLMEVALKIT:
            return mvbench_first_token(prediction) or None, float(mvbench_vlmevalkit(prediction, target, rec["options"]))
        return mvbench_first_token(prediction) or None, float(mvbench_check_ans(prediction, target))

    def aggregate(self, rows, flavor=OFFICIAL):
        check_flavor(flavor)
        rows = decode_rows(rows)
        counted = rows
        if flavor == LMMS_EVAL:  # mvbench_aggregate_results skips empty predictions
            counted = [r for r in rows if has_error(r) or (r.get("prediction") or "") != ""]
        out = mean_rows(self.name, flavor, "accuracy", counted)
        per_task = [100 * sum(map(row_score, m)) / len(m) for m in group_by(counted, lambda r: r.get("category")).values()]
        if per_task:
            out.append(traced_sums(metric_row(self.name, flavor, "accuracy_task_mean", None,
                                              sum(per_task) / len(per_task), len(counted)),
                                   *macro_sums(counted, lambda r: r.get("category"), self.resampling_unit)))
        return out + count_rows(self.name, flavor, rows)


BENCHMARK = MVBench()
