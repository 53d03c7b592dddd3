"""Benchmark declarations: prompt templates per flavor, per-sample scoring, aggregation, registry."""

import pytest

from evals.registry import get_benchmark, list_benchmarks
from evals.sample import Media, Sample

IMG = Media(kind="image", data=b"\x89PNG\r\n\x1a\n....")
VID = Media(kind="video", path="/data/v.mp4")
LETTER = "\nAnswer with the option's letter from the given choices directly."
ABCD = {"A": "cat", "B": "dog", "C": "fish", "D": "bird"}
SHORT = "\nAnswer the question using a single word or phrase."
VLMK_OPTS = "Please select the correct answer from the options above. \n"


def sample(name, **kw):
    kw.setdefault("media", [IMG])
    return Sample(sample_id=kw.pop("sample_id", "1"), benchmark=name, split="test", **kw)


def text_of(messages):
    return "".join(p["text"] for m in messages for p in m["content"] if p["type"] == "text")


# Expected prompts: lmms-eval tasks/<task>/utils.py doc_to_text with the YAML default kwargs, and
# VLMEvalKit ImageMCQDataset / ImageVQADataset / image_yorn build_prompt. Columns: benchmark, sample
# kwargs, lmms-eval text, VLMEvalKit text.
PROMPT_CASES = [
    ("mmbench", dict(question="What is it?", options={"A": "cat", "B": "dog"}, meta={"hint": "A pet."}),
     "A pet. What is it? There are several options:\nA. cat\nB. dog\n" + LETTER,
     "Hint: A pet.\nQuestion: What is it?\nOptions:\nA. cat\nB. dog\n" + VLMK_OPTS),
    ("mmbench", dict(question="What is it?", options={"A": "cat", "B": "dog"}, meta={"hint": None}),
     "What is it? There are several options:\nA. cat\nB. dog\n" + LETTER,
     "Question: What is it?\nOptions:\nA. cat\nB. dog\n" + VLMK_OPTS),
    ("ai2d", dict(question="Which stage?", options={"A": "egg", "B": "larva"}),
     "Which stage?\nA. egg\nB. larva" + LETTER,
     "Question: Which stage?\nOptions:\nA. egg\nB. larva\n" + VLMK_OPTS),
    ("scienceqa", dict(question="Which is a gas?", options={"A": "air", "B": "rock"}, meta={"hint": "Think."}),
     "Context: Think.\nWhich is a gas?\nA. air\nB. rock" + LETTER,
     "Hint: Think.\nQuestion: Which is a gas?\nOptions:\nA. air\nB. rock\n" + VLMK_OPTS),
    ("scienceqa", dict(question="Which is a gas?", options={"A": "air", "B": "rock"}, meta={"hint": None}),
     "Which is a gas?\nA. air\nB. rock" + LETTER,
     "Question: Which is a gas?\nOptions:\nA. air\nB. rock\n" + VLMK_OPTS),
    ("mme", dict(question="Is there a dog? Please answer yes or no."),
     "Is there a dog?" + SHORT, "Is there a dog? Please answer yes or no."),
    ("pope", dict(question=" Is there a dog in the image? "),
     "Is there a dog in the image?" + SHORT, " Is there a dog in the image? "),
    ("textvqa", dict(question="what is the BRAND?"), "What is the brand?" + SHORT, "what is the BRAND?" + SHORT),
    ("docvqa", dict(question="What is the date?"), "What is the date?" + SHORT, "What is the date?" + SHORT),
    ("chartqa", dict(question="What is the max?"), "What is the max?\nAnswer the question with a single word.",
     "What is the max?" + SHORT),
    ("ocrbench", dict(question=" what is written? "), "what is written?", " what is written? "),
    ("realworldqa", dict(question="Where?\nA. left\nB. right\nPlease answer directly with only the letter of the "
                                  "correct option and nothing else.", options={"A": "left", "B": "right"},
                         meta={"question_has_options": True}),
     "Where?\nA. left\nB. right\nPlease answer directly with only the letter of the correct option and nothing else.",
     "Question: Where?\nOptions:\nA. left\nB. right\n" + VLMK_OPTS),
    ("mmmu", dict(question="<image 1> Is it a cat?", options={"A": "yes", "B": "no"},
                  meta={"question_type": "multiple-choice", "image_tags": [1]}),
     "Is it a cat?\nA. yes\nB. no\n\nAnswer with the option's letter from the given choices directly.",
     "Question:  Is it a cat?\nOptions:\nA. yes\nB. no\n" + VLMK_OPTS),
    ("mmmu", dict(question="<image 1> How many?", meta={"question_type": "open", "image_tags": [1]}),
     "How many?\n\nAnswer the question using a single word or phrase.", "Question:  How many?\n"),
    ("videomme", dict(question="How many?", options={"A": "1.", "B": "2."}, media=[VID],
                      meta={"option_lines": ["A. 1.", "B. 2."]}),
     "Select the best answer to the following multiple-choice question based on the video and the subtitles. "
     "Respond with only the letter (A, B, C, or D) of the correct option.\nHow many?\nA. 1.\nB. 2.\n" + LETTER,
     "\nThese are the frames of a video. Select the best answer to the following multiple-choice question based on "
     "the video. Respond with only the letter (A, B, C, or D) of the correct option.\nQuestion: How many?\nA. 1.\n"
     "B. 2.\nAnswer: "),
    ("mvbench", dict(question="What happens?", options={"A": "sit", "B": "run"}, media=[VID]),
     "Question:What happens?\nOption:\n(A) sit\n(B) run\nOnly give the best option.\n",
     "Carefully watch the video and pay attention to the cause and sequence of events, the detail and movement of "
     "objects, and the action and pose of persons. Based on your observations, select the best option that "
     "accurately addresses the question.\nQuestion: What happens?\nOptions:\n(A) sit\n(B) run"
     "\nOnly give the best option.Best option:("),
    # MMStar: lmms-eval tasks/mmstar/utils.py (options stored in the HF question; no final period in the YAML)
    ("mmstar", dict(question="Which is it?\nOptions: A: cat, B: dog", options={"A": "cat", "B": "dog"},
                    meta={"question_has_options": True}),
     "Which is it?\nOptions: A: cat, B: dog\nAnswer with the option's letter from the given choices directly",
     "Question: Which is it?\nOptions:\nA. cat\nB. dog\n" + VLMK_OPTS),
    ("mmstar", dict(question="Is it a cat? Please answer yes or no.", options={"A": "yes", "B": "no"},
                    meta={"question_has_options": False}),  # a TSV row: the HF form is rebuilt
     "Is it a cat?\nOptions: A: yes, B: no\nAnswer with the option's letter from the given choices directly",
     "Question: Is it a cat? Please answer yes or no.\nOptions:\nA. yes\nB. no\n" + VLMK_OPTS),
    ("hallusionbench", dict(question="Is the right circle larger?"), "Is the right circle larger?",
     "Is the right circle larger?"),
    ("infovqa", dict(question="Which year?"), "Which year?" + SHORT, "Which year?" + SHORT),
]


@pytest.mark.parametrize("name,kw,lmms,vlmk", PROMPT_CASES)
def test_prompts(name, kw, lmms, vlmk):
    bench = get_benchmark(name)
    s = sample(name, **kw)
    assert text_of(bench.build_messages(s, "lmms-eval")) == lmms
    assert text_of(bench.build_messages(s, "official")) == lmms
    assert text_of(bench.build_messages(s, "vlmevalkit")) == vlmk


def test_media_come_first_and_carry_bytes_or_paths():
    msgs = get_benchmark("pope").build_messages(sample("pope", question="Dog?"))
    assert msgs == [{"role": "user", "content": [{"type": "image", "image": IMG.data},
                                                 {"type": "text", "text": "Dog?" + SHORT}]}]
    msgs = get_benchmark("videomme").build_messages(sample("videomme", question="Q", options={"A": "x"}, media=[VID]))
    assert msgs[0]["content"][0] == {"type": "video", "video": "/data/v.mp4"}


def test_mmmu_interleaving_per_flavor():
    img1, img2 = Media(kind="image", data=b"1"), Media(kind="image", data=b"2")
    s = sample("mmmu", question="Compare <image 2> with <image 1>.", options={"A": "same", "B": "different"},
               media=[img1, img2], meta={"question_type": "multiple-choice", "image_tags": [1, 2]})
    lmms = get_benchmark("mmmu").build_messages(s, "lmms-eval")[0]["content"]
    # lmms-eval doc_to_messages: placeholders in text order receive the images in sorted tag order
    assert [p.get("image") or p.get("text") for p in lmms] == [
        "Compare", b"1", "with", b"2", ".\nA. same\nB. different\n\nAnswer with the option's letter from the given "
        "choices directly."]
    vlmk = get_benchmark("mmmu").build_messages(s, "vlmevalkit")[0]["content"]
    # VLMEvalKit split_MMMU: "<image k>" is the k-th image
    assert [p.get("image") or p.get("text") for p in vlmk] == [
        "Question: Compare ", b"2", " with ", b"1", ".\nOptions:\nA. same\nB. different\n" + VLMK_OPTS]


def test_mvbench_vlmevalkit_roles():
    s = sample("mvbench", question="Q", options={"A": "x", "B": "y"}, media=[VID])
    msgs = get_benchmark("mvbench").build_messages(s, "vlmevalkit")
    assert [m["role"] for m in msgs] == ["system", "user", "assistant"]
    assert msgs[1]["content"][0] == {"type": "video", "video": "/data/v.mp4"}
    assert msgs[2]["content"] == [{"type": "text", "text": "Best option:("}]


def rec(name, **kw):
    return sample(name, **kw).to_record()


# Per-sample scoring through benchmark.score: (benchmark, sample kwargs, prediction, flavor, extracted, score).
SCORE_CASES = [
    ("mmbench", dict(options={"A": "cat", "B": "dog"}, targets=["B"]), "B", "official", "B", 1.0),
    ("mmbench", dict(options={"A": "cat", "B": "dog"}, targets=["B"]), " dog ", "vlmevalkit", "B", 1.0),
    ("mmbench", dict(options={"A": "cat", "B": "dog"}, targets=["B"]), "(B).", "lmms-eval", "B", 1.0),
    ("ai2d", dict(options={"A": "x", "B": "y"}, targets=["B"]), "B. y", "official", "B", 1.0),
    ("ai2d", dict(options={"A": "x", "B": "y"}, targets=["B"]), "B ", "lmms-eval", None, 0.0),  # no strip
    ("ai2d", dict(options={"A": "x", "B": "y"}, targets=["B"]), "(B)", "lmms-eval", "B", 1.0),
    ("ai2d", dict(options={"A": "x", "B": "y"}, targets=["B"]), "B ", "vlmevalkit", "B", 1.0),
    ("scienceqa", dict(options={"A": "x", "B": "y"}, targets=["A"]), "a", "official", "A", 1.0),
    ("scienceqa", dict(options={"A": "x", "B": "y"}, targets=["A"]), "A. x", "lmms-eval", "A", 1.0),
    ("scienceqa", dict(options={"A": "x", "B": "y"}, targets=["A"]), "The answer is A", "official", None, 0.0),
    ("realworldqa", dict(options={"A": "l", "B": "r"}, targets=["B"]), "The answer is B.", "official", "B", 1.0),
    ("realworldqa", dict(targets=["Downhill"]), "downhill.", "lmms-eval", "downhill", 1.0),
    ("mme", dict(targets=["No"]), "No, it is not.", "official", "no", 1.0),
    ("mme", dict(targets=["Yes"]), "y", "lmms-eval", "yes", 1.0),
    ("mme", dict(targets=["Yes"]), "y", "official", None, 0.0),
    ("pope", dict(targets=["yes"]), "None", "official", "yes", 1.0),  # POPE parser never abstains
    ("pope", dict(targets=["yes"]), "Yes.", "lmms-eval", None, 0.0),  # exact match only (issue #673)
    ("pope", dict(targets=["yes"]), "Yes.", "vlmevalkit", "yes", 1.0),
    ("textvqa", dict(targets=["nike"] * 10), "Nike", "official", "Nike", 0.0),
    ("textvqa", dict(targets=["nike"] * 10), "Nike", "lmms-eval", "Nike", 1.0),
    ("docvqa", dict(targets=["abc"]), "abd      ", "official", "abd      ", 2 / 3),
    ("docvqa", dict(targets=["abc"]), "abd      ", "vlmevalkit", "abd      ", 8 / 9),
    ("chartqa", dict(targets=["0.12"]), "12% ", "vlmevalkit", "12%", 1.0),
    ("chartqa", dict(targets=["0.12"]), "12% ", "official", "12% ", 0.0),
    ("ocrbench", dict(targets=["hello"], category="Regular Text Recognition", meta={"dataset": "IIIT5K"}),
     "It says HELLO", "official", "It says HELLO", 1.0),
    ("mmmu", dict(options={"A": "cat", "B": "dog"}, targets=["B"], meta={"question_type": "multiple-choice"}),
     "(B)", "official", "B", 1.0),
    ("mmmu", dict(options={"A": "cat", "B": "dog"}, targets=["B"], meta={"question_type": "multiple-choice"}),
     "no idea", "official", None, 0.0),
    ("mmmu", dict(targets=["1.06"], meta={"question_type": "open", "answer_raw": "1.06"}),
     "The answer is 1.06", "official", "[1.06]", 1.0),
    ("mmmu", dict(targets=["1.06"], meta={"question_type": "open", "answer_raw": "1.06"}),
     "It is 1.06 metres", "vlmevalkit", "A", 1.0),  # pseudo-MCQ: A = the gold text
    ("videomme", dict(options={"A": "a", "B": "b", "C": "c", "D": "d"}, targets=["C"]), "Based on it, C",
     "official", "B", 0.0),
    ("videomme", dict(options={"A": "a", "B": "b", "C": "c", "D": "d"}, targets=["C"]), "Based on it, C",
     "lmms-eval", "C", 1.0),
    ("mvbench", dict(options={"A": "sit", "B": "run"}, targets=["B"]), "", "official", None, 1.0),
    ("mvbench", dict(options={"A": "sit", "B": "run"}, targets=["B"]), "", "lmms-eval", None, 0.0),
    ("mvbench", dict(options={"A": "sit", "B": "run"}, targets=["B"]), "B) run", "vlmevalkit", "b)", 1.0),
    ("demo", dict(options={"A": "red", "B": "blue"}, targets=["A"], meta={"type": "mcq"}), "A", "official", "A", 1.0),
    ("demo", dict(targets=["3", "three"], meta={"type": "short"}), "Three.", "official", "3", 1.0),
    ("demo", dict(targets=["yes"], meta={"type": "yesno"}), "Yes", "vlmevalkit", "yes", 1.0),
    ("mmstar", dict(options=ABCD, targets=["B"]), "B", "official", "B", 1.0),
    ("mmstar", dict(options=ABCD, targets=["B"]), "The answer is (B)", "lmms-eval", "B", 1.0),
    ("mmstar", dict(options=ABCD, targets=["B"]), "b", "lmms-eval", None, 0.0),  # extract_mcq_answer is case-sensitive
    ("mmstar", dict(options=ABCD, targets=["B"]), " dog ", "vlmevalkit", "B", 1.0),  # option text
    ("mmstar", dict(options=ABCD, targets=["B"]), "Sorry, I can't help with images of people yet.", "official",
     None, 0.0),  # VLMEvalKit's Z
    ("hallusionbench", dict(targets=["yes"], category="VD", meta={"figure_id": "1"}), "Yes, it is.", "official",
     "yes", 1.0),
    # an unsure answer to a VS question asked without its figure is right for the authors (assign_correctness) …
    ("hallusionbench", dict(targets=["no"], category="VS", meta={"figure_id": "0"}), "I cannot tell.", "official",
     None, 1.0),
    ("hallusionbench", dict(targets=["no"], category="VS", meta={"figure_id": "0"}), "I cannot tell.", "vlmevalkit",
     None, 0.0),
    # … lmms-eval's rule reads anything without "yes" as no, and "eyes" as yes
    ("hallusionbench", dict(targets=["no"], category="VS", meta={"figure_id": "0"}), "I cannot tell.", "lmms-eval",
     "no", 1.0),
    ("hallusionbench", dict(targets=["no"], category="VD", meta={"figure_id": "1"}), "Her eyes are closed.",
     "lmms-eval", "yes", 0.0),
    ("infovqa", dict(targets=["2019"]), "in 2019", "official", "in 2019", 4 / 7),
    ("infovqa", dict(targets=["2019", "in 2019"]), "in 2019", "vlmevalkit", "in 2019", 1.0),
]


@pytest.mark.parametrize("name,kw,pred,flavor,extracted,score", SCORE_CASES)
def test_score(name, kw, pred, flavor, extracted, score):
    got = get_benchmark(name).score(rec(name, **kw), pred, flavor)
    assert got[0] == extracted
    assert got[1] == pytest.approx(score)


def scored(name, samples, predictions, flavor="official", errors=None):
    bench = get_benchmark(name)
    rows = []
    for i, (s, p) in enumerate(zip(samples, predictions)):
        row = s.to_record()
        err = (errors or {}).get(i)
        ext, sc = (None, None) if err else bench.score(row, p, flavor)
        row.update(prediction=p, extracted=ext, score=sc, error=err)
        rows.append(row)
    return rows


def metric(rows, name, category=None):
    (hit,) = [r for r in rows if r["metric"] == name and r["category"] == category]
    return hit["value"]


def test_mmbench_aggregate_is_circular():
    def q(index, opts, gt, cat="c"):
        return sample("mmbench", sample_id=str(index), options=opts, targets=[gt], category=cat,
                      group=str(index % 1_000_000), meta={"index": index})
    samples = [q(1, {"A": "cat", "B": "dog"}, "A"), q(1_000_001, {"A": "dog", "B": "cat"}, "B"),
               q(2, {"A": "x", "B": "y"}, "A", "d"), q(1_000_002, {"A": "y", "B": "x"}, "B", "d"),
               q(1_000_003, {"A": "p", "B": "q"}, "A")]  # base question 3 absent: group not judged
    rows = scored("mmbench", samples, ["A", "B", "A", "A", "A"])
    out = get_benchmark("mmbench").aggregate(rows, "official")
    assert metric(out, "accuracy") == 50.0 and metric(out, "accuracy", "c") == 100.0
    assert metric(out, "accuracy_vanilla") == 100.0 and metric(out, "circular_groups") == 2
    rows = scored("mmbench", samples, ["A", "B", "A", "B", "A"], errors={1: "timeout"})
    out = get_benchmark("mmbench").aggregate(rows, "official")
    assert metric(out, "accuracy") == 50.0 and metric(out, "errors") == 1


def test_mme_aggregate_and_error_rows():
    def q(qid, answer, cat="color"):
        return sample("mme", sample_id=f"{qid}:{answer.lower()}", targets=[answer], category=cat, group=qid)
    samples = [q("1.png", "Yes"), q("1.png", "No"), q("2.png", "Yes", "code_reasoning"), q("2.png", "No", "code_reasoning")]
    out = get_benchmark("mme").aggregate(scored("mme", samples, ["yes", "no", "yes", "no"]), "official")
    assert metric(out, "perception") == 200.0 and metric(out, "cognition") == 200.0
    out = get_benchmark("mme").aggregate(scored("mme", samples, ["yes", "no", "yes", "no"], errors={0: "x"}), "official")
    assert metric(out, "score", "color") == 50.0 and metric(out, "acc", "color") == 50.0 and metric(out, "errors") == 1


def test_pope_aggregate_reports_split_f1_mean():
    samples, preds = [], []
    for cat, answers in (("random", ["yes", "no"]), ("adversarial", ["yes", "no"])):
        for i, a in enumerate(answers):
            samples.append(sample("pope", sample_id=f"{cat}/{i}", targets=[a], category=cat))
    preds = ["yes", "no", "yes", "yes"]
    out = get_benchmark("pope").aggregate(scored("pope", samples, preds), "official")
    assert metric(out, "f1", "random") == 100.0 and metric(out, "f1", "adversarial") == pytest.approx(200 / 3)
    assert metric(out, "f1_mean_over_splits") == pytest.approx((100 + 200 / 3) / 2)
    # an error row is a wrong answer even though "" would parse as "yes" under the official rule
    out = get_benchmark("pope").aggregate(scored("pope", samples, preds, errors={0: "oom"}), "official")
    assert metric(out, "accuracy", "random") == 50.0


def test_videomme_official_leaves_unanswered_out():
    opts = {"A": "a", "B": "b", "C": "c", "D": "d"}
    samples = [sample("videomme", sample_id=str(i), options=opts, targets=["A"], media=[VID], category="Knowledge",
                      meta={"duration": d, "task_type": "OCR Problems"}) for i, d in enumerate(["short", "short", "long"])]
    preds = ["A", "this response is long and says nothing about which option at all here", "B"]
    off = get_benchmark("videomme").aggregate(scored("videomme", samples, preds, "official"), "official")
    assert metric(off, "accuracy") == 50.0 and metric(off, "answered") == 2
    assert metric(off, "accuracy_by_duration", "short") == 100.0
    lmms = get_benchmark("videomme").aggregate(scored("videomme", samples, preds, "lmms-eval"), "lmms-eval")
    assert metric(lmms, "accuracy") == pytest.approx(100 / 3)


def test_mvbench_aggregate_task_mean_and_lmms_denominator():
    opts = {"A": "x", "B": "y"}
    samples = [sample("mvbench", sample_id=f"t{i}", options=opts, targets=["A"], media=[VID], category=c)
               for i, c in enumerate(["t1", "t1", "t2"])]
    preds = ["A", "", "B"]
    out = get_benchmark("mvbench").aggregate(scored("mvbench", samples, preds, "official"), "official")
    assert metric(out, "accuracy") == pytest.approx(200 / 3)  # "" counts as correct under check_ans
    assert metric(out, "accuracy_task_mean") == pytest.approx(50.0)
    out = get_benchmark("mvbench").aggregate(scored("mvbench", samples, preds, "lmms-eval"), "lmms-eval")
    assert metric(out, "accuracy") == 50.0  # the empty prediction is not counted


def test_ocrbench_aggregate_counts_hits():
    samples = [sample("ocrbench", sample_id=str(i), targets=["a"], category=c, meta={"dataset": "x"})
               for i, c in enumerate(["Regular Text Recognition", "Digit String Recognition", "Doc-oriented VQA"])]
    out = get_benchmark("ocrbench").aggregate(scored("ocrbench", samples, ["a", "a", "b"]), "official")
    assert metric(out, "score") == 2 and metric(out, "score_by_group", "Text Recognition") == 2
    assert metric(out, "score", "Doc-oriented VQA") == 0


def test_registry():
    names = list_benchmarks()
    assert names == ["mmmu", "mmbench", "mme", "chartqa", "docvqa", "textvqa", "ai2d", "ocrbench", "pope",
                     "scienceqa", "realworldqa", "videomme", "mvbench", "demo", "mathvista", "mmstar",
                     "hallusionbench", "infovqa", "mmvet", "charxiv", "refcoco"]
    for name in names:
        bench = get_benchmark(name)
        assert bench.name == name and bench.version and bench.layouts()
    assert get_benchmark("videomme").video_sampling and get_benchmark("mvbench").video_sampling
    assert get_benchmark("mmbench").video_sampling is None
    with pytest.raises(KeyError, match="known: mmmu"):
        get_benchmark("vqav2")
    with pytest.raises(ValueError):
        get_benchmark("pope").score(rec("pope", targets=["yes"]), "yes", "OFFICIAL")


def test_demo_end_to_end_perfect_and_wrong_predictions():
    bench = get_benchmark("demo")
    samples = list(bench.load())
    assert len(samples) == 200 and all(s.error is None for s in samples)
    kinds = {m.kind for s in samples for m in s.media}
    assert kinds == {"image", "video"} and any(len(s.media) == 2 for s in samples)
    assert {s.category for s in samples} == {"colour", "shape", "count", "position", "presence", "multi-image", "video"}
    perfect = [s.targets[0] if s.meta["type"] != "mcq" else s.targets[0] for s in samples]
    for flavor in ("official", "lmms-eval", "vlmevalkit"):
        out = bench.aggregate(scored("demo", samples, perfect, flavor), flavor)
        assert metric(out, "accuracy") == 100.0, flavor
        wrong = bench.aggregate(scored("demo", samples, ["purple"] * len(samples), flavor), flavor)
        assert metric(wrong, "accuracy") == 0.0
    assert len(list(bench.load(limit=3))) == 3


def test_pope_comma_joined_categories_count_in_each_split():
    # VLMEvalKit POPE.tsv keeps one row for a question shared by two splits: "random,popular"
    samples = [sample("pope", sample_id="0", targets=["yes"], category="random,popular"),
               sample("pope", sample_id="1", targets=["no"], category="random")]
    out = get_benchmark("pope").aggregate(scored("pope", samples, ["yes", "yes"]), "vlmevalkit")
    assert metric(out, "accuracy", "popular") == 100.0 and metric(out, "accuracy", "random") == 50.0
    assert [r["n"] for r in out if r["metric"] == "accuracy" and r["category"] is None] == [3]


def test_mmstar_aggregate_lmms_eval_is_a_mean_over_subcategories():
    def q(i, sub, cat="coarse perception"):
        return sample("mmstar", sample_id=str(i), options=ABCD, targets=["A"], category=cat, subcategory=sub)
    samples = [q(0, "a"), q(1, "a"), q(2, "b"), q(3, "c", "math")]
    preds = ["A", "B", "A", "B"]
    vlmk = get_benchmark("mmstar").aggregate(scored("mmstar", samples, preds, "vlmevalkit"), "vlmevalkit")
    assert metric(vlmk, "accuracy") == 50.0 and metric(vlmk, "accuracy", "coarse perception") == pytest.approx(200 / 3)
    lmms = get_benchmark("mmstar").aggregate(scored("mmstar", samples, preds, "lmms-eval"), "lmms-eval")
    # sub-categories a 0.5, b 1.0, c 0.0: category = (0.5 + 1.0) / 2, overall ("average") = 1.5 / 3
    assert metric(lmms, "accuracy", "coarse perception") == 75.0 and metric(lmms, "accuracy") == 50.0
    assert metric(lmms, "accuracy_by_subcategory", "a") == 50.0 and metric(lmms, "accuracy", "math") == 0.0


def test_hallusionbench_aggregate_per_category_and_error_rows():
    def q(cat, sub, fig, qid, target="yes"):
        return sample("hallusionbench", sample_id=f"{cat}_{sub}_0_{fig}_{qid}", targets=[target], category=cat,
                      subcategory=sub, meta={"set_id": "0", "figure_id": str(fig), "question_id": str(qid),
                                             "l2_category": sub})
    samples = [q("VD", "illusion", 0, 0), q("VD", "illusion", 0, 1), q("VD", "illusion", 1, 0), q("VD", "illusion", 1, 1),
               q("VS", "chart", 0, 0)]
    preds = ["yes", "yes", "no", "yes", "yes"]
    out = get_benchmark("hallusionbench").aggregate(scored("hallusionbench", samples, preds, errors={4: "oom"}))
    # VD: figure 0 right, figure 1 half right; question 0 wrong on figure 1 → aAcc 3/4, fAcc 1/2, qAcc 1/2
    assert metric(out, "aAcc", "VD") == 75.0 and metric(out, "fAcc", "VD") == 50.0 and metric(out, "qAcc", "VD") == 50.0
    # the VS question failed (error); asked without a figure, it is not part of fAcc (official)
    assert metric(out, "aAcc") == 60.0 and metric(out, "fAcc") == 50.0 and metric(out, "qAcc") == pytest.approx(100 / 3)
    assert metric(out, "fAcc_by_subcategory", "illusion") == 50.0 and metric(out, "errors") == 1


def test_infovqa_aggregate_breaks_down_by_answer_type():
    samples = [sample("infovqa", sample_id="1", targets=["10"], meta={"answer_type": ["Question span", "Image span"]}),
               sample("infovqa", sample_id="2", targets=["blue"], meta={"answer_type": ["Image span"],
                                                                       "operation": ["Counting"]})]
    out = get_benchmark("infovqa").aggregate(scored("infovqa", samples, ["10", "red"]), "official")
    assert metric(out, "anls") == 50.0 and metric(out, "anls_by_answer_type", "Image span") == 50.0
    assert metric(out, "anls_by_answer_type", "Question span") == 100.0
    assert metric(out, "anls_by_operation", "Counting") == 0.0
