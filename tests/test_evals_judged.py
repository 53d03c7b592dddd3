"""MathVista, MM-Vet and CharXiv: extraction / grading tables derived from the reference code, the judge prompts of
each flavor against the references' own output, the readers on files written here in each published format, and
aggregation.

Prompt digests: sha256 (first 16 hex digits) of what the reference implementation builds for the same inputs —
lupantech/MathVista ``create_test_prompt(demo_prompt, ...)``, lmms-eval 0.7.2 ``MathVistaEvaluator`` /
``tasks/mmvet/utils.py`` / ``tasks/charxiv``, VLMEvalKit ``build_mathvista_gpt4_prompt`` /
``build_mmvet_gpt4_prompt``, yuweihao/MM-Vet ``mm-vet_evaluator.py``, princeton-nlp/CharXiv
``build_reasoning_queries`` / ``build_reasoning_grading_queries`` — run on these inputs when the tests were written.
"""

import hashlib
import json

import pytest
from evals_fixtures.formats import b64, image_struct, png_bytes, write_image, write_json, write_parquet, write_tsv

from evals.extract import mathvista as mv
from evals.metrics import charxiv as cx
from evals.metrics import mmvet
from evals.registry import get_benchmark

RED = png_bytes((255, 0, 0))
MC = {"question_type": "multi_choice", "answer_type": "text", "choices": ["3/11", "8/11", "6/11", "3/5"],
      "precision": None, "query": "Q", "answer": "8/11", "answer_option": "B"}
INT = {"question_type": "free_form", "answer_type": "integer", "choices": None, "precision": None, "query": "Q",
       "answer": "14", "answer_option": None}
FLOAT2 = dict(INT, answer_type="float", precision=2.0, answer="1.46")
LIST = dict(INT, answer_type="list", answer="[2007, 2008]")


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------------ MathVista rules


@pytest.mark.parametrize("response, problem, expected", [
    ("", MC, ""), ("8/11", MC, "8/11"), ("(B) 8/11", MC, None), ("14", INT, "14"), (" 14\n", INT, "14"),
    ("14.0", INT, None), ("The answer is 14", INT, None), ("1.460", FLOAT2, "1.46"), ("1e1", FLOAT2, "10.0"),
    ("[2007, 2008]", LIST, None),
])
def test_mathvista_direct_extraction(response, problem, expected):
    # extract_answer before its judge call: int()/float() of the whole response, or a response equal to a choice
    assert mv.direct_extraction(response, problem) == expected


@pytest.mark.parametrize("extraction, problem, official, lmms", [
    ("B", MC, "8/11", "8/11"), ("(b) whatever", MC, "8/11", "8/11"), ("8/12", MC, "8/11", "8/11"),
    ("3/4", MC, "3/5", "3/5"), ("14.7", INT, "14", "14"), ("x", INT, None, None),
    # round(x, int(2.0)) officially; lmms-eval's round(x, 2.0) raises → None
    ("1.456", FLOAT2, "1.46", None), ("[2007, 2008]", LIST, "[2007, 2008]", "[2007, 2008]"),
])
def test_mathvista_normalize(extraction, problem, official, lmms):
    assert mv.normalize(extraction, problem, "official") == official
    assert mv.normalize(extraction, problem, "lmms-eval") == lmms


def test_mathvista_safe_equal_and_empty_multiple_choice():
    assert mv.safe_equal("14", "14") and not mv.safe_equal(" 14", "14")  # official: ==
    assert mv.safe_equal(" 14", "14", "lmms-eval") and mv.safe_equal(14, "14", "lmms-eval")  # str().strip()
    assert not mv.safe_equal(None, "14", "lmms-eval")
    # the references pick the choice nearest to "" (the shortest, "3/5"); ours: unparsed
    assert mv.score_extraction("", MC) == (None, 0.0)


@pytest.mark.parametrize("prediction, problem, flavor, expected, asks", [
    ("8/11", MC, "official", ("8/11", 1.0), False),
    (" 8/11", MC, "official", (None, 0.0), True),  # not equal to a choice: the judge decides
    (" 8/11", MC, "lmms-eval", ("8/11", 1.0), False),  # lmms-eval strips the response first
    ("14", INT, "official", ("14", 1.0), False), ("13", INT, "lmms-eval", ("13", 0.0), False),
    ("1.46", FLOAT2, "official", ("1.46", 1.0), False), ("1.46", FLOAT2, "lmms-eval", (None, 0.0), False),
    ("The answer is B", MC, "vlmevalkit", ("B", 1.0), False),  # can_infer letter, kept even if wrong
    ("A", MC, "vlmevalkit", ("A", 0.0), False),
    ("14", INT, "vlmevalkit", ("14", 1.0), False),
    ("13", INT, "vlmevalkit", (None, 0.0), True),  # prefetch only succeeds on the right number
    ("[2007, 2008]", LIST, "vlmevalkit", (None, 0.0), True),
])
def test_mathvista_rule_scores(prediction, problem, flavor, expected, asks):
    assert mv.rule_score(prediction, problem, flavor) == expected
    assert mv.needs_judge(prediction, problem, flavor) is asks


def test_mathvista_vlmevalkit_quirks():
    zero = dict(INT, answer="0")
    assert mv.needs_judge("0", zero, "vlmevalkit")  # post_check returns 0: falsy, so VLMEvalKit asks its judge
    assert mv.judged_score("0", "0", zero, "vlmevalkit") == ("0", 1.0)
    # list answers: VLMEvalKit compares str(None) with the answer, so even a perfect extraction misses
    assert mv.judged_score("[2007, 2008]", "", LIST, "vlmevalkit") == ("None", 0.0)
    assert mv.judged_score("B", "", MC, "vlmevalkit") == ("B", 1.0)
    assert mv.judged_score("14.0", "", INT, "vlmevalkit") == (None, 0.0)  # int("14.0") fails there
    assert mv.judged_score(" B\n", "", MC, "official") == ("8/11", 1.0)  # the reply is stripped, "B" → choice


def test_mathvista_judge_prompts_equal_the_references():
    query = ("Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, at the end.\n"
             "Question: Which colour is the square?\nChoices:\n(A) red\n(B) blue")
    response = "I think it is the first one."
    assert digest(mv.judge_prompt(query, response)) == "f5014e5dc29c3f50"  # official == lmms-eval
    assert digest(mv.vlmevalkit_judge_prompt(query, response)) == "78c793bc2dd83910"


# ------------------------------------------------------------------------------------------------ MM-Vet, CharXiv


def test_mmvet_grading_prompts_and_reply_rules():
    args = ("What colour is it?", "red<OR>crimson", "It is red.")
    assert digest(mmvet.grading_prompt(*args, "official")) == "e55ee3626129e73b"
    assert digest(mmvet.grading_prompt(*args, "lmms-eval")) == "4fe2a4b50cd30e66"
    assert digest(mmvet.grading_prompt(*args, "vlmevalkit")) == "9a500ecec6b64f8b"
    # official / lmms-eval: float(reply.split(" ")[0].strip()) in [0, 1]; VLMEvalKit: float(reply) in [0, 1]
    table = [("0.5", 0.5, 0.5), ("0.5 because it is", 0.5, None), ("1.0\n", 1.0, 1.0), (" 0.7", None, 0.7),
             ("1.2", None, None), ("Correctness: 0.4", None, None), ("-0.0", 0.0, 0.0)]
    for reply, first_token, whole in table:
        assert mmvet.parse_grade(reply, "official") == first_token, reply
        assert mmvet.parse_grade(reply, "lmms-eval") == first_token, reply
        assert mmvet.parse_grade(reply, "vlmevalkit") == whole, reply


def test_charxiv_prompts_equal_the_references():
    assert digest(cx.question_prompt("Which curve peaks first?", 1, "blue")) == "71c92bf0832ad390"
    assert digest(cx.question_prompt("What is the gap?", 4, "12.34")) == "ff413027c2c9beb1"
    assert "a number with 2 decimal places" in cx.question_prompt("What is the gap?", 4, "12.34")
    assert cx.number_instruction("7") == "* Your final answer must be an exact integer."
    assert digest(cx.grading_prompt("Which curve peaks first?", "blue", "The blue one.", 1)) == "5af3b182d8041f0b"
    assert digest(cx.grading_prompt("Which curve peaks first?", "blue", "The blue one.", 1, "vlmevalkit")) \
        == "5af3b182d8041f0b"
    # lmms-eval picks the rules by reasoning_q_source (3 here) and says "integer"
    assert digest(cx.grading_prompt("Which curve peaks first?", "blue", "The blue one.", 3, "lmms-eval")) \
        == "7493c9ea50a5a721"
    bench = get_benchmark("charxiv")
    from evals.sample import Sample

    sample = Sample("0", "charxiv", "validation", "Which curve peaks first?", targets=["blue"],
                    meta={"inst_category": 1, "qa_source": 3})
    assert digest(bench.prompt(sample, "lmms-eval")) == "374e4dae4db6e044"


@pytest.mark.parametrize("reply, official, lmms, vlmk", [
    ('{"extracted_answer": "b", "score": 1}', ("b", 1.0), ("b", 1.0), ("b", 1.0)),
    ('```json\n{"extracted_answer": "0.012", "score": 0}\n```', ("0.012", 0.0), ("0.012", 0.0), ("0.012", 0.0)),
    ('{"extracted_answer": "x", "score": 0.5}', ("x", 0.0), ("x", 0.5), ("x", 0.5)),  # official: not 0/1 → 0
    ('{"extract_answer": "x", "score": 1}', (None, 0.0), (None, -1.0), (None, 0.0)),  # key the parser reads absent
    ('{"extracted_answer": "x", "score": "1"}', ("x", 0.0), (None, -1.0), (None, 0.0)),
    ("I cannot grade this.", (None, 0.0), (None, -1.0), (None, 0.0)),
])
def test_charxiv_reply_rules(reply, official, lmms, vlmk):
    assert cx.parse_grading(reply, "official") == official
    assert cx.parse_grading(reply, "lmms-eval") == lmms
    assert cx.parse_grading(reply, "vlmevalkit") == vlmk


# ------------------------------------------------------------------------------------------------ readers


def test_mathvista_reads_the_vlmevalkit_tsv(tmp_path):
    path = write_tsv(tmp_path / "MathVista_MINI.tsv", [
        {"index": 7, "image": b64(RED), "question": "Hint: ...\nQuestion: Colour?\nChoices:\n(A) red\n(B) blue",
         "answer": "blue", "answer_option": "B", "choices": str(["red", "blue"]), "question_type": "multi_choice",
         "answer_type": "text", "precision": "", "unit": "", "task": "figure question answering",
         "skills": str(["logical reasoning"])},
        {"index": 8, "image": "7", "question": "Hint: ...\nQuestion: Width?", "answer": "2.5", "choices": "",
         "question_type": "free_form", "answer_type": "float", "precision": "1.0",
         "task": "textbook question answering",
         "skills": str(["scientific reasoning", "arithmetic reasoning"])},
        {"index": 9, "image": b64(RED), "question": "Broken", "answer": "green", "choices": str(["red", "blue"]),
         "question_type": "multi_choice", "answer_type": "text"},
    ])
    bench = get_benchmark("mathvista")
    samples = list(bench.load(path))
    assert [s.sample_id for s in samples] == ["7", "8", "9"]
    mc, fl, broken = samples
    assert mc.options == {"A": "red", "B": "blue"} and mc.targets == ["blue"]
    assert mc.category == "figure question answering"
    assert mc.meta["answer_option"] == "B" and len(mc.media) == 1 and fl.media == mc.media  # index reference
    assert fl.meta["precision"] == 1.0 and fl.meta["skills"] == ["scientific reasoning", "arithmetic reasoning"]
    assert "not one of the choices" in broken.error
    for flavor in ("official", "lmms-eval", "vlmevalkit"):  # the TSV holds only the published query
        assert bench.prompt(mc, flavor) == mc.meta["query"] == mc.question
    assert bench.score(mc.to_record(), "B", "vlmevalkit") == ("B", 1.0)
    assert bench.score(fl.to_record(), "2.5", "official") == ("2.5", 1.0)


def test_mathvista_reads_hf_parquet_and_prompts_per_flavor(tmp_path):
    from evals_fixtures.datasets import build_all

    bench = get_benchmark("mathvista")
    mc, num = list(bench.load(build_all(tmp_path)["mathvista"]))
    assert mc.sample_id == "1" and num.meta["answer_type"] == "integer" and mc.meta["skills"] == ["logical reasoning"]
    assert bench.prompt(mc, "official").startswith("Hint: Please answer the question and provide the correct option")
    assert bench.prompt(mc, "lmms-eval") == ("Which colour is the square?\nA. red\nB. blue\nAnswer with the option's "
                                             "letter from the given choices directly.")
    assert bench.prompt(num, "lmms-eval") == "How many squares?\nAnswer the question using a single integer number."
    record = num.to_record()
    assert bench.judge_prompt(record, "3", "official") is None  # int("3") settles it
    prompt = bench.judge_prompt(record, "three", "official")
    assert prompt.endswith("Question: How many squares?\n\nthree\n\nExtracted answer: ")
    assert bench.score_judged(record, "three", "3", "official") == ("3", 1.0)


def test_mmvet_reads_release_tsv_and_parquet(tmp_path):
    write_image(tmp_path / "mm-vet" / "images" / "v1_0.png", RED)
    write_json(tmp_path / "mm-vet" / "mm-vet.json", {
        "v1_0": {"imagename": "v1_0.png", "capability": ["ocr", "rec"], "question": "Q0", "answer": "a<AND>b"},
        "v1_1": {"imagename": "missing.png", "capability": ["math"], "question": "Q1", "answer": "3"},
        "v1_2": {"imagename": "v1_0.png", "capability": ["smell"], "question": "Q2", "answer": "x"}})
    tsv = write_tsv(tmp_path / "MMVet.tsv", [{"index": 0, "image": b64(RED), "question": "Q0", "answer": "a<AND>b",
                                              "category": "rec,ocr"}])
    write_parquet(tmp_path / "hf" / "data" / "test-00000-of-00001.parquet", [
        {"question_id": "v1_0", "image": image_struct(RED), "question": "Q0", "answer": "a<AND>b",
         "image_source": "x", "capability": "ocr,rec"}])
    bench = get_benchmark("mmvet")
    release = list(bench.load(tmp_path / "mm-vet"))
    assert [s.sample_id for s in release] == ["v1_0", "v1_1", "v1_2"]
    assert release[0].category == "rec_ocr" and release[0].error is None and release[0].targets == ["a<AND>b"]
    assert release[1].error and "missing.png" in release[1].error
    assert "unknown capability" in release[2].error
    for other in (list(bench.load(tsv)), list(bench.load(tmp_path / "hf"))):
        assert [(s.category, s.question, s.targets) for s in other] == [("rec_ocr", "Q0", ["a<AND>b"])]
    assert bench.prompt(release[0], "lmms-eval").startswith("First please perform reasoning")
    assert bench.score(release[0].to_record(), "a and b", "official") == (None, None)  # no rule: a judge grades it
    assert bench.score_judged(release[0].to_record(), "a", "0.5", "official") == ("0.5", 0.5)
    assert bench.score_judged(release[0].to_record(), "a", "half right", "official") == (None, 0.0)


def test_charxiv_reads_release_and_parquet(tmp_path):
    root = tmp_path / "CharXiv"
    write_image(root / "images" / "0.jpg", RED)
    write_json(root / "data" / "reasoning_val.json", {
        "0": {"figure_id": 0, "query": "Q?", "answer": "7", "inst_category": 4, "qa_source": 1},
        "3": {"figure_id": 3, "query": "Q3?", "answer": "x", "inst_category": 2, "qa_source": 2}})
    write_json(root / "data" / "reasoning_test.json", {
        "0": {"figure_id": 0, "query": "Q?", "answer": None, "inst_category": 4, "qa_source": 1}})
    write_json(root / "data" / "image_metadata_val.json", {"0": {"category": "q-fin", "year": "23"}})
    write_json(root / "data" / "descriptive_val.json", {"0": {"num_subplots": 6}})
    bench = get_benchmark("charxiv")
    good, missing = list(bench.load(root))
    assert (good.category, good.subcategory, good.meta["subject"], good.meta["year"], good.meta["subplots"]) == \
        ("Number-in-General", "GPT-Sourced", "Quantitative Finance", "2023", "5+ Subplots")
    assert missing.sample_id == "3" and "3.jpg" in missing.error
    [test_row] = list(bench.load(root, split="test"))
    assert "missing answer" in test_row.error
    write_parquet(tmp_path / "hf" / "validation-00000-of-00001.parquet", [
        {"image": image_struct(RED), "figure_path": "images/0.jpg", "category": "cs", "year": "20", "num_subplots": 1,
         "reasoning_q": "Q?", "reasoning_a": "7", "reasoning_a_type": 4, "reasoning_q_source": 1}])
    [hf] = list(bench.load(tmp_path / "hf"))
    assert (hf.sample_id, hf.category, hf.meta["subplots"]) == ("0", "Number-in-General", "1 Subplot")
    assert bench.prompt(hf, "official") == bench.prompt(good, "official")
    assert bench.prompt(hf, "official").endswith("* Your final answer must be an exact integer.\n    ")


# ------------------------------------------------------------------------------------------------ aggregation


def rows_of(bench, samples_scores):
    rows = []
    for sample, score, error in samples_scores:
        rows.append(dict(sample.to_record(), prediction="p", extracted=None if score is None else "x", score=score,
                         error=error))
    return rows


def metric(metrics, name, category=None):
    return [(m["value"], m["n"]) for m in metrics if m["metric"] == name and m["category"] == category]


def test_aggregation_per_category_skill_and_capability(tmp_path):
    from evals_fixtures.datasets import build_all

    paths = build_all(tmp_path)
    mathvista = get_benchmark("mathvista")
    mc, num = list(mathvista.load(paths["mathvista"]))
    out = mathvista.aggregate(rows_of(mathvista, [(mc, 1.0, None), (num, 0.0, None)]))
    assert metric(out, "accuracy") == [(50.0, 2)] and metric(out, "accuracy", "math word problem") == [(0.0, 1)]
    assert metric(out, "accuracy_by_skill", "logical reasoning") == [(50.0, 2)]
    assert metric(out, "accuracy_by_skill", "arithmetic reasoning") == [(0.0, 1)]
    assert metric(out, "accuracy_by_question_type", "multi_choice") == [(100.0, 1)]

    bench = get_benchmark("mmvet")
    [s] = list(bench.load(paths["mmvet"]))
    other = type(s)(**{**s.__dict__, "sample_id": "v1_9", "category": "math", "meta": {"capabilities": ["math"]}})
    unjudged = bench.aggregate(rows_of(bench, [(s, None, None), (other, None, None)]))
    assert metric(unjudged, "judge_score") == [(None, 0)] and metric(unjudged, "unjudged") == [(2, 2)]
    judged = bench.aggregate(rows_of(bench, [(s, 0.4, None), (other, None, "media: gone")]))
    assert metric(judged, "judge_score") == [(20.0, 2)] and metric(judged, "judge_score", "rec_ocr") == [(40.0, 1)]
    assert metric(judged, "judge_score_by_capability", "math") == [(0.0, 1)]  # the error row fails
    assert metric(judged, "unjudged") == [(0, 2)] and metric(judged, "errors") == [(1, 2)]

    charxiv = get_benchmark("charxiv")
    [c] = list(charxiv.load(paths["charxiv"]))
    out = charxiv.aggregate(rows_of(charxiv, [(c, 1.0, None)]), "official")
    assert metric(out, "accuracy") == [(100.0, 1)] and metric(out, "accuracy_by_subject", "Computer Science") == \
        [(100.0, 1)]
    assert metric(out, "accuracy_by_subplots", "2-4 Subplots") == [(100.0, 1)]
    lmms = charxiv.aggregate(rows_of(charxiv, [(c, -1.0, None), (c, 1.0, None)]), "lmms-eval")
    assert metric(lmms, "accuracy") == [(0.0, 2)]  # lmms-eval averages a failed grade (-1) in
    assert json.dumps(lmms)
