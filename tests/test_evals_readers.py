"""Reader tests: small files written in each published format, read through ``benchmark.load``."""

import json

import pytest

from evals.errors import DatasetError
from evals.registry import get_benchmark
from evals.sample import Media, Sample

try:
    from evals_fixtures import formats as F
except ImportError:  # tests/ imported as a package
    from tests.evals_fixtures import formats as F

RED, BLUE = F.png_bytes((255, 0, 0)), F.jpeg_bytes((0, 0, 255))


def load(name, path, **kw):
    return list(get_benchmark(name).load(path, **kw))


def by_id(samples):
    return {s.sample_id: s for s in samples}


# --- VLMEvalKit TSV ---------------------------------------------------------------------------------


def test_mmbench_tsv_circular_copies_index_references_and_bad_rows(tmp_path):
    rows = [
        {"index": 7, "question": "What animal?", "hint": "A pet.", "A": "cat", "B": "dog", "C": None, "D": None,
         "answer": "A", "category": "coarse_perception", "l2-category": "Perception", "split": "dev",
         "image": F.b64(RED)},
        {"index": 1000007, "question": "What animal?", "hint": "A pet.", "A": "dog", "B": "cat", "C": None, "D": None,
         "answer": "B", "category": "coarse_perception", "l2-category": "Perception", "split": "dev", "image": "7"},
        {"index": 8, "question": "No answer", "A": "x", "B": "y", "answer": None, "split": "dev", "image": F.b64(RED)},
        {"index": 9, "question": "Wrong letter", "A": "x", "B": "y", "answer": "E", "split": "dev", "image": F.b64(RED)},
        {"index": 10, "question": "Bad image", "A": "x", "B": "y", "answer": "A", "split": "dev", "image": "!!notbase64!!" * 9},
        {"index": 11, "question": "Dangling ref", "A": "x", "B": "y", "answer": "A", "split": "dev", "image": "4242"},
        {"index": 12, "question": "Test row", "A": "x", "B": "y", "answer": "A", "split": "test", "image": F.b64(RED)},
    ]
    path = F.write_tsv(tmp_path / "MMBench_DEV_EN.tsv", rows)
    samples = by_id(load("mmbench", path))
    assert set(samples) == {"7", "1000007", "8", "9", "10", "11"}  # split column filters "test"
    base, rotated = samples["7"], samples["1000007"]
    assert base.options == {"A": "cat", "B": "dog"} and base.targets == ["A"] and base.group == "7"
    assert rotated.group == "7" and rotated.targets == ["B"] and rotated.media[0].data == RED
    assert base.meta["hint"] == "A pet." and base.category == "coarse_perception" and base.subcategory == "Perception"
    assert base.error is None and base.media == [Media(kind="image", data=RED)]
    assert "missing answer" in samples["8"].error
    assert "not one of the option letters" in samples["9"].error
    assert "base64" in samples["10"].error
    assert "4242" in samples["11"].error
    # a folder of LMUData works too, and limit stops early
    assert len(load("mmbench", tmp_path, limit=2)) == 2


def test_tsv_keeps_none_as_an_option_text(tmp_path):
    rows = [{"index": 1, "question": "q", "A": "None", "B": "NA", "answer": "A", "image": F.b64(RED)}]
    sample = load("mmbench", F.write_tsv(tmp_path / "x.tsv", rows))[0]
    assert sample.options == {"A": "None", "B": "NA"}


def test_mmmu_tsv_multi_image_list_and_split(tmp_path):
    rows = [
        {"index": 1, "question": "<image 1> vs <image 2>: which is red?", "A": "left", "B": "right", "answer": "A",
         "image": str([F.b64(RED), F.b64(BLUE)]), "category": "Art", "split": "validation"},
        {"index": 2, "question": "Open <image 1>", "answer": "42", "image": F.b64(RED), "category": "Math",
         "split": "validation"},
        {"index": 3, "question": "dev row", "A": "a", "B": "b", "answer": "A", "image": F.b64(RED), "split": "dev"},
    ]
    samples = by_id(load("mmmu", F.write_tsv(tmp_path / "MMMU_DEV_VAL.tsv", rows)))
    assert set(samples) == {"1", "2"}
    assert [m.data for m in samples["1"].media] == [RED, BLUE]
    assert samples["2"].meta["question_type"] == "open" and samples["2"].targets == ["42"]
    assert load("mmmu", tmp_path / "MMMU_DEV_VAL.tsv", split="dev")[0].sample_id == "3"


@pytest.mark.parametrize("name,rows,check", [
    ("mme", [{"index": 0, "image": F.b64(RED), "question": "Is it red? Please answer yes or no.", "answer": "Yes",
              "category": "color", "image_path": "color/1.png"}],
     lambda s: s.group == "color/1.png" and s.targets == ["Yes"]),
    ("chartqa", [{"index": 0, "image": F.b64(RED), "question": "Max?", "answer": "45", "split": "human"}],
     lambda s: s.targets == ["45"] and s.category == "human"),
    ("docvqa", [{"index": 0, "image": F.b64(RED), "question": "Date?", "answer": str(["1 May", "May 1"])}],
     lambda s: s.targets == ["1 May", "May 1"]),
    ("textvqa", [{"index": 0, "image": F.b64(RED), "question": "Brand?", "answer": str(["nike"] * 10)}],
     lambda s: s.targets == ["nike"] * 10),
    ("ai2d", [{"index": 0, "image": F.b64(RED), "question": "Which?", "A": "x", "B": "y", "answer": "B"}],
     lambda s: s.targets == ["B"] and s.options == {"A": "x", "B": "y"}),
    ("ocrbench", [{"index": 0, "image": F.b64(RED), "question": "Read", "answer": str(["hello"]),
                   "category": "Regular Text Recognition"}],
     lambda s: s.category == "Regular Text Recognition" and s.meta["dataset"] is None),
    ("pope", [{"index": 0, "image": F.b64(RED), "question": "Is there a dog?", "answer": "No", "category": "random"}],
     lambda s: s.targets == ["no"] and s.category == "random"),
    ("scienceqa", [{"index": 0, "image": F.b64(RED), "question": "Which?", "hint": "Look.", "A": "x", "B": "y",
                    "answer": "A"}],
     lambda s: s.meta["hint"] == "Look." and s.targets == ["A"]),
    ("realworldqa", [{"index": 0, "image": F.b64(RED), "question": "Where?", "A": "left", "B": "right", "answer": "B"}],
     lambda s: s.options == {"A": "left", "B": "right"} and not s.meta["question_has_options"]),
])
def test_tsv_layout_per_benchmark(tmp_path, name, rows, check):
    samples = load(name, F.write_tsv(tmp_path / f"{name}.tsv", rows))
    assert len(samples) == 1 and samples[0].error is None
    assert samples[0].media[0].data == RED
    assert check(samples[0])


def test_tsv_meta_only_image_path(tmp_path):
    F.write_image(tmp_path / "images" / "POPE" / "a.png", RED)
    rows = [{"index": 0, "image_path": "a.png", "question": "Dog?", "answer": "yes"},
            {"index": 1, "image_path": "missing.png", "question": "Dog?", "answer": "no"}]
    samples = load("pope", F.write_tsv(tmp_path / "POPE.tsv", rows))
    assert samples[0].media[0].path.endswith("a.png") and samples[0].error is None
    assert "not found" in samples[1].error


# --- Hugging Face Parquet ---------------------------------------------------------------------------


def test_mmmu_parquet_subject_configs_string_options_and_image_order(tmp_path):
    rows = [{"id": "validation_Art_Theory_1", "question": "Compare <image 2> and <image 1>.",
             "options": "['<image 1>', 'the other one']", "answer": "B", "question_type": "multiple-choice",
             "image_1": F.image_struct(RED), "image_2": F.image_struct(BLUE), "image_3": None, "subfield": "Painting"}]
    F.write_parquet(tmp_path / "Art_Theory" / "validation-00000-of-00001.parquet", rows,
                    image_columns=("image_1", "image_2", "image_3"))
    F.write_parquet(tmp_path / "Art_Theory" / "dev-00000-of-00001.parquet",
                    [dict(rows[0], id="dev_Art_Theory_1")], image_columns=("image_1", "image_2", "image_3"))
    samples = load("mmmu", tmp_path)
    assert [s.sample_id for s in samples] == ["validation_Art_Theory_1"]
    s = samples[0]
    assert s.options == {"A": "<image 1>", "B": "the other one"} and s.targets == ["B"]
    assert s.category == "Art_Theory" and s.meta["domain"] == "Art and Design" and s.subcategory == "Painting"
    assert [m.data for m in s.media] == [RED, BLUE] and s.meta["image_tags"] == [1, 2]


def test_mmbench_parquet_prefers_en_config(tmp_path):
    row = {"index": 3, "question": "Q", "hint": "nan", "A": "a", "B": "b", "C": "nan", "D": "nan", "answer": "B",
           "category": "c", "L2-category": "l2", "split": "dev", "image": F.image_struct(RED)}
    F.write_parquet(tmp_path / "en" / "dev-00000-of-00001.parquet", [row])
    F.write_parquet(tmp_path / "cn" / "dev-00000-of-00001.parquet", [dict(row, index=4)])
    samples = load("mmbench", tmp_path)
    assert [s.sample_id for s in samples] == ["3"]
    assert samples[0].options == {"A": "a", "B": "b"} and samples[0].subcategory == "l2"
    assert samples[0].meta["hint"] is None  # lmms-lab/MMBench writes absent hints as "nan"


def test_parquet_image_struct_errors_become_sample_errors(tmp_path):
    rows = [{"question_id": "color/1.png", "question": "Red?", "answer": "Yes", "category": "color",
             "image": F.image_struct(RED)},
            {"question_id": "color/1.png", "question": "Blue?", "answer": "No", "category": "color",
             "image": F.image_struct(b"<html>not an image</html>")},
            {"question_id": "color/2.png", "question": "Green?", "answer": "Maybe", "category": "color",
             "image": F.image_struct(RED)}]
    F.write_parquet(tmp_path / "data" / "test-00000-of-00001.parquet", rows)
    samples = load("mme", tmp_path)
    assert [s.sample_id for s in samples] == ["color/1.png:yes", "color/1.png:no", "color/2.png#2"]
    assert samples[0].group == "color/1.png" and samples[0].error is None
    assert "not a PNG/JPEG" in samples[1].error
    assert "not Yes/No" in samples[2].error


@pytest.mark.parametrize("name,config,split,row,list_columns,check", [
    ("chartqa", "data", "test", {"type": "human_test", "question": "Max?", "answer": "12"}, (),
     lambda s: s.category == "human_test" and s.targets == ["12"]),
    ("docvqa", "DocVQA", "validation", {"questionId": "337", "question": "Date?", "answers": ["1 May"],
                                       "question_types": ["form"], "docId": 5}, ("answers", "question_types"),
     lambda s: s.sample_id == "337" and s.meta["question_types"] == ["form"]),
    ("textvqa", "data", "validation", {"question_id": 34602, "question": "what brand?", "answers": ["nike"] * 10,
                                      "image_id": "abc"}, ("answers",),
     lambda s: s.sample_id == "34602" and len(s.targets) == 10),
    ("ai2d", "data", "test", {"question": "Which?", "options": ["x", "y", "z"], "answer": "2"}, ("options",),
     lambda s: s.targets == ["C"] and s.options["C"] == "z"),
    ("ocrbench", "data", "test", {"dataset": "HME100k", "question": "Write", "question_type": "x", "answer": ["a"]},
     ("answer",), lambda s: s.meta["dataset"] == "HME100k"),
    ("pope", "data", "test", {"id": "17", "question_id": "3", "question": "Dog?", "answer": "yes",
                              "image_source": "COCO_1", "category": "adversarial"}, (),
     lambda s: s.sample_id == "17" and s.category == "adversarial"),
    ("scienceqa", "ScienceQA-IMG", "test", {"question": "Which?", "choices": ["x", "y"], "answer": 1, "hint": "",
                                            "subject": "natural science", "topic": "physics", "grade": "grade5"},
     ("choices",), lambda s: s.targets == ["B"] and s.category == "natural science" and s.meta["hint"] is None),
    ("realworldqa", "data", "test", {"question": "Where is it?\nA. left\nB. right\nPlease answer directly with only "
                                                 "the letter of the correct option and nothing else.", "answer": "B"}, (),
     lambda s: s.options == {"A": "left", "B": "right"} and s.meta["question_has_options"]),
])
def test_parquet_layout_per_benchmark(tmp_path, name, config, split, row, list_columns, check):
    row = dict(row, image=F.image_struct(RED))
    F.write_parquet(tmp_path / config / f"{split}-00000-of-00001.parquet", [row], list_columns=list_columns)
    samples = load(name, tmp_path)
    assert len(samples) == 1 and samples[0].error is None, samples[0].error
    assert samples[0].media[0].data == RED
    assert check(samples[0])


def test_parquet_ignores_other_configs(tmp_path):
    base = {"questionId": "1", "question": "Q", "answers": ["a"], "image": F.image_struct(RED)}
    F.write_parquet(tmp_path / "DocVQA" / "validation-00000-of-00001.parquet", [base], list_columns=("answers",))
    F.write_parquet(tmp_path / "InfographicVQA" / "validation-00000-of-00001.parquet",
                    [dict(base, questionId="2")], list_columns=("answers",))
    assert [s.sample_id for s in load("docvqa", tmp_path)] == ["1"]
    F.write_parquet(tmp_path / "ScienceQA-FULL" / "test-00000-of-00001.parquet",
                    [{"question": "q", "choices": ["a", "b"], "answer": 0, "image": None}], list_columns=("choices",))
    F.write_parquet(tmp_path / "ScienceQA-IMG" / "test-00000-of-00001.parquet",
                    [{"question": "q", "choices": ["a", "b"], "answer": 0, "image": F.image_struct(RED)}],
                    list_columns=("choices",))
    assert [s.error for s in load("scienceqa", tmp_path)] == [None]


def test_videomme_parquet_and_missing_video(tmp_path):
    rows = [{"video_id": "001", "duration": "short", "domain": "Knowledge", "sub_category": "Humanity & History",
             "url": "u", "videoID": "fFjv93ACGo8", "question_id": "001-1", "task_type": "Counting Problem",
             "question": "How many?", "options": ["A. 1.", "B. 2.", "C. 3.", "D. 4."], "answer": "C"},
            {"video_id": "002", "duration": "long", "domain": "Sports Competition", "sub_category": "Football",
             "url": "u", "videoID": "missingVid", "question_id": "002-1", "task_type": "Action Reasoning",
             "question": "Why?", "options": ["A. a", "B. b", "C. c", "D. d"], "answer": "A"}]
    F.write_parquet(tmp_path / "videomme" / "test-00000-of-00001.parquet", rows, image_columns=(),
                    list_columns=("options",))
    F.write_video(tmp_path / "data" / "fFjv93ACGo8.mp4")
    ok, missing = load("videomme", tmp_path)
    assert ok.error is None and ok.media[0].kind == "video" and ok.media[0].path.endswith("fFjv93ACGo8.mp4")
    assert ok.options == {"A": "1.", "B": "2.", "C": "3.", "D": "4."} and ok.targets == ["C"]
    assert ok.group == "fFjv93ACGo8" and ok.meta["duration"] == "short" and ok.category == "Knowledge"
    assert "video file not found" in missing.error and missing.sample_id == "002-1"


# --- original releases ------------------------------------------------------------------------------


def test_docvqa_release(tmp_path):
    F.write_image(tmp_path / "documents" / "abc.png", RED)
    F.write_json(tmp_path / "val_v1.0_withQT.json", {"dataset_name": "docvqa", "data": [
        {"questionId": 1, "question": "Title?", "image": "documents/abc.png", "docId": 9, "answers": ["A", "a"],
         "question_types": ["layout"]},
        {"questionId": 2, "question": "No answers", "image": "documents/abc.png", "docId": 9},
        {"questionId": 3, "question": "Missing page", "image": "documents/zzz.png", "answers": ["x"]}]})
    samples = by_id(load("docvqa", tmp_path))
    assert samples["1"].targets == ["A", "a"] and samples["1"].media[0].path.endswith("abc.png")
    assert "missing answers" in samples["2"].error
    assert "not found" in samples["3"].error


def test_textvqa_release(tmp_path):
    F.write_image(tmp_path / "train_images" / "img1.jpg", BLUE)
    F.write_json(tmp_path / "TextVQA_0.5.1_val.json", {"data": [
        {"question_id": 5, "image_id": "img1", "question": "what is it?", "answers": ["x"] * 10}]})
    (s,) = load("textvqa", tmp_path)
    assert s.error is None and s.meta["image_id"] == "img1"


def test_chartqa_release(tmp_path):
    F.write_image(tmp_path / "test" / "png" / "c1.png", RED)
    F.write_json(tmp_path / "test" / "test_human.json", [{"imgname": "c1.png", "query": "Max?", "label": "5"}])
    F.write_json(tmp_path / "test" / "test_augmented.json", [{"imgname": "c2.png", "query": "Min?", "label": "1"}])
    samples = by_id(load("chartqa", tmp_path))
    assert samples["human/0"].category == "human_test" and samples["human/0"].error is None
    assert "not found" in samples["augmented/0"].error


def test_pope_release_jsonl_with_a_bad_line(tmp_path):
    F.write_image(tmp_path / "val2014" / "COCO_val2014_000000310196.jpg", BLUE)
    F.write_jsonl(tmp_path / "output" / "coco" / "coco_pope_random.json", [
        {"question_id": 1, "image": "COCO_val2014_000000310196.jpg", "text": "Is there a snowboard?", "label": "yes"},
        "{not json",
        {"question_id": 3, "image": "COCO_val2014_000000310196.jpg", "text": "Is there a car?"}])
    samples = load("pope", tmp_path)
    assert samples[0].sample_id == "random/1" and samples[0].error is None and samples[0].targets == ["yes"]
    assert "invalid JSON" in samples[1].error
    assert "missing answer" in samples[2].error


def test_mme_release_both_folder_styles(tmp_path):
    F.write_image(tmp_path / "artwork" / "images" / "10002.jpg", BLUE)
    (tmp_path / "artwork" / "questions_answers_YN").mkdir(parents=True)
    (tmp_path / "artwork" / "questions_answers_YN" / "10002.txt").write_text(
        "Is this by Monet? Please answer yes or no.\tYes\nIs this by Dali? Please answer yes or no.\tNo\n")
    F.write_image(tmp_path / "code_reasoning" / "0020.png", RED)
    (tmp_path / "code_reasoning" / "0020.txt").write_text("Does it print 3?\tNo\nno tab here\n")
    samples = by_id(load("mme", tmp_path))
    assert samples["artwork/10002.jpg:yes"].group == "artwork/10002.jpg"
    assert samples["artwork/10002.jpg:no"].error is None
    assert samples["code_reasoning/0020.png:no"].category == "code_reasoning"
    assert any("TAB" in (s.error or "") for s in samples.values())


def test_ocrbench_release(tmp_path):
    F.write_image(tmp_path / "OCRBench_Images" / "IIIT5K" / "1.png", RED)
    F.write_json(tmp_path / "OCRBench.json", [{"dataset_name": "IIIT5K", "id": 0, "image_path": "IIIT5K/1.png",
                                              "question": "what is written?", "answers": ["hello"],
                                              "type": "Regular Text Recognition"}])
    (s,) = load("ocrbench", tmp_path)
    assert s.error is None and s.meta["dataset"] == "IIIT5K" and s.category == "Regular Text Recognition"


def test_scienceqa_release_keeps_image_questions(tmp_path):
    F.write_json(tmp_path / "problems.json", {
        "1": {"question": "Which?", "choices": ["x", "y"], "answer": 1, "hint": "", "image": "image.png",
              "subject": "social science", "topic": "geography", "grade": "grade4", "split": "test"},
        "2": {"question": "Text only", "choices": ["x", "y"], "answer": 0, "hint": "", "image": None, "split": "test"},
        "3": {"question": "Bad", "choices": ["x"], "answer": 4, "image": "image.png", "split": "test"}})
    F.write_json(tmp_path / "pid_splits.json", {"test": ["1", "2", "3"]})
    F.write_image(tmp_path / "images" / "test" / "1" / "image.png", RED)
    samples = by_id(load("scienceqa", tmp_path))
    assert set(samples) == {"1", "3"}
    assert samples["1"].targets == ["B"] and samples["1"].error is None
    assert "does not select" in samples["3"].error


def test_mvbench_release(tmp_path):
    F.write_json(tmp_path / "json" / "action_sequence.json", [
        {"video": "A1.mp4", "question": "What did the person do first?", "candidates": ["Sat.", "Ran."],
         "answer": "Ran.", "start": 1.5, "end": 9.0},
        {"video": "A2.mp4", "question": "Then?", "candidates": ["Sat.", "Ran."], "answer": "Flew."}])
    F.write_json(tmp_path / "json" / "episodic_reasoning.json", [
        {"video": "clip1", "question": "Who?", "candidates": ["me", "you"], "answer": "me"}])
    F.write_video(tmp_path / "video" / "star" / "Charades_v1_480" / "A1.mp4")
    F.write_image(tmp_path / "video" / "tvqa" / "frames_fps3_hq" / "clip1" / "00001.jpg", BLUE)
    samples = by_id(load("mvbench", tmp_path))
    seq = samples["action_sequence/0"]
    assert seq.targets == ["B"] and seq.options == {"A": "Sat.", "B": "Ran."} and seq.meta["start"] == 1.5
    assert seq.category == "action_sequence" and seq.error is None
    assert "not one of the candidates" in samples["action_sequence/1"].error
    ep = samples["episodic_reasoning/0"]
    assert ep.meta["data_type"] == "frame" and ep.media[0].path.endswith("clip1")


# --- dataset-level errors ---------------------------------------------------------------------------


def test_missing_or_unrecognised_paths_raise_one_dataset_error(tmp_path):
    with pytest.raises(DatasetError) as err:
        get_benchmark("mmbench").load(tmp_path / "nope")
    assert "nope" in str(err.value) and "vlmevalkit-tsv" in str(err.value) and "hf-parquet" in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no known layout"):
        get_benchmark("docvqa").load(tmp_path / "empty")
    with pytest.raises(DatasetError, match="a dataset path is required"):
        get_benchmark("pope").load(None)


def test_structurally_wrong_files_raise_dataset_error(tmp_path):
    F.write_tsv(tmp_path / "MMBench_DEV_EN.tsv", [{"index": 1, "question": "q"}])
    with pytest.raises(DatasetError, match="lacks required column"):
        get_benchmark("mmbench").load(tmp_path / "MMBench_DEV_EN.tsv")
    F.write_parquet(tmp_path / "pq" / "data" / "test-00000-of-00001.parquet", [{"question": "q"}], image_columns=())
    with pytest.raises(DatasetError, match="split 'validation'"):
        get_benchmark("textvqa").load(tmp_path / "pq")
    (tmp_path / "chart" / "test").mkdir(parents=True)
    (tmp_path / "chart" / "test" / "test_human.json").write_text("[{]")
    with pytest.raises(DatasetError, match="cannot read JSON"):
        get_benchmark("chartqa").load(tmp_path / "chart")  # raised by load(), not while iterating
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "val_v1.0.json").write_text("{broken")
    with pytest.raises(DatasetError, match="cannot read JSON"):
        get_benchmark("docvqa").load(tmp_path / "bad")


def test_sample_record_round_trip():
    s = Sample(sample_id="1", benchmark="b", split="dev", question="Q?", options={"A": "x"}, targets=["A"],
               category="c", group="g", meta={"k": [1, 2]}, media=[Media(kind="image", data=RED)])
    rec = s.to_record()
    assert json.loads(json.dumps(rec)) == rec
    assert set(rec) == {"sample_id", "benchmark", "split", "question", "options", "targets", "category",
                        "subcategory", "group", "meta"}
    back = Sample.from_record(rec)
    assert (back.options, back.targets, back.meta, back.media) == ({"A": "x"}, ["A"], {"k": [1, 2]}, [])
    with pytest.raises(ValueError):
        Media(kind="audio", data=b"x")
    with pytest.raises(ValueError):
        Media(kind="image")


# --- MMStar, HallusionBench, InfographicVQA (RefCOCO: tests/test_evals_grounding.py) -----------------


def test_mmstar_tsv_and_lin_chen_parquet(tmp_path):
    tsv = F.write_tsv(tmp_path / "tsv" / "MMStar.tsv", [
        {"index": 0, "question": "Which colour?", "A": "red", "B": "blue", "C": "green", "D": "grey", "answer": "B",
         "category": "coarse perception", "l2-category": "image style & quality", "image": F.b64(RED)},
        {"index": 1, "question": "Bad", "A": "x", "B": "y", "C": "z", "D": "w", "answer": "E", "image": F.b64(RED)}])
    good, bad = load("mmstar", tsv)
    assert good.options == {"A": "red", "B": "blue", "C": "green", "D": "grey"} and good.targets == ["B"]
    assert good.category == "coarse perception" and good.subcategory == "image style & quality"
    assert good.meta == {"question_has_options": False} and "not one of the option letters" in bad.error
    # Lin-Chen/MMStar as downloaded: mmstar.parquet at the top (split "val" by lmms-eval's YAML), options in the text
    F.write_parquet(tmp_path / "hf" / "mmstar.parquet", [
        {"index": 7, "question": "What is shown?\nOptions: A: a cat, sitting, B: dogs, C: 3, 4, D: none",
         "image": F.image_struct(RED), "answer": "C", "category": "math", "l2_category": "geometry",
         "meta_info": {"source": "MathVista", "split": "testmini", "image_path": "7.png"}},
        {"index": 8, "question": "No options", "image": F.image_struct(RED), "answer": "A", "category": "math",
         "l2_category": "geometry", "meta_info": None}])
    ok, no_options = load("mmstar", tmp_path / "hf")
    assert ok.sample_id == "7" and ok.options["A"] == "a cat, sitting" and ok.options["C"] == "3, 4"
    assert ok.targets == ["C"] and ok.subcategory == "geometry" and ok.meta["question_has_options"]
    assert ok.media[0].data == RED and "Options" in no_options.error


def test_hallusionbench_tsv_parquet_and_release(tmp_path):
    tsv = F.write_tsv(tmp_path / "HallusionBench.tsv", [
        {"index": "VD_figure_1_3_1_2", "question": "Is it red?", "answer": "Yes", "category": "VD",
         "l2-category": "VD_figure", "image": F.b64(RED)},
        {"index": "VD_bad", "question": "?", "answer": "No", "category": "VD", "image": F.b64(RED)},
        {"index": "VS_chart_1_0_0_0", "question": "?", "answer": "Maybe", "category": "VS", "image": F.b64(RED)}])
    good, bad_index, bad_answer = load("hallusionbench", tsv)
    assert good.targets == ["yes"] and good.subcategory == "VD_figure"
    assert good.meta == {"set_id": "3", "figure_id": "1", "question_id": "2", "l2_category": "VD_figure",
                         "visual_input": None}
    assert "parts 3-5" in bad_index.error and "not yes/no" in bad_answer.error
    # lmms-lab/HallusionBench: split "image" (default) and "non_image" (no figure)
    record = {"category": "VS", "subcategory": "chart", "visual_input": "1", "set_id": "4", "figure_id": "1",
              "sample_note": "note", "question_id": "0", "question": "Was it 2020?", "gt_answer_details": "It was.",
              "gt_answer": "1", "filename": "./hallusion_bench/VS/chart/4_1.png"}
    F.write_parquet(tmp_path / "hf" / "data" / "image-00000-of-00001.parquet",
                    [dict(record, image=F.image_struct(RED))])
    F.write_parquet(tmp_path / "hf" / "data" / "non_image-00000-of-00001.parquet",
                    [dict(record, visual_input="0", figure_id="0", filename=None, image=None)])
    (figure,) = load("hallusionbench", tmp_path / "hf")
    assert figure.sample_id == "VS_chart_4_1_0" and figure.targets == ["yes"] and figure.media[0].data == RED
    assert figure.category == "VS" and figure.meta["l2_category"] == "chart"
    (text_only,) = load("hallusionbench", tmp_path / "hf", split="non_image")
    assert text_only.media == [] and text_only.error is None and text_only.sample_id == "VS_chart_4_0_0"
    # the authors' release: HallusionBench.json + hallusion_bench/ images
    F.write_image(tmp_path / "rel" / "hallusion_bench" / "VS" / "chart" / "4_1.png", RED)
    F.write_json(tmp_path / "rel" / "HallusionBench.json", [
        record, dict(record, visual_input="0", figure_id="0", filename=None, gt_answer="0"),
        dict(record, question_id="1", filename="./hallusion_bench/VS/chart/gone.png")])
    assert [s.sample_id for s in load("hallusionbench", tmp_path / "rel")] == ["VS_chart_4_1_0", "VS_chart_4_1_1"]
    everything = by_id(load("hallusionbench", tmp_path / "rel", split="all"))
    assert everything["VS_chart_4_0_0"].media == [] and everything["VS_chart_4_0_0"].targets == ["no"]
    assert "not found" in everything["VS_chart_4_1_1"].error
    with pytest.raises(DatasetError, match="split"):
        load("hallusionbench", tmp_path / "rel", split="test")


def test_infovqa_parquet_config_and_release(tmp_path):
    row = {"questionId": "65718", "question": "What percentage?", "answers": ["18%", "18"],
           "answer_type": ["single span"], "image": F.image_struct(BLUE), "image_url": "u",
           "operation/reasoning": ["counting"], "ocr": "{}", "data_split": "val"}
    F.write_parquet(tmp_path / "hf" / "InfographicVQA" / "validation-00000-of-00001.parquet", [row],
                    list_columns=("answers", "answer_type", "operation/reasoning"))
    F.write_parquet(tmp_path / "hf" / "DocVQA" / "validation-00000-of-00001.parquet",
                    [{"questionId": "1", "question": "Doc?", "answers": ["x"], "image": F.image_struct(RED)}],
                    list_columns=("answers",))
    (s,) = load("infovqa", tmp_path / "hf")
    assert s.sample_id == "65718" and s.targets == ["18%", "18"] and s.media[0].data == BLUE
    assert s.meta == {"answer_type": ["single span"], "operation": ["counting"]}
    F.write_image(tmp_path / "rel" / "infographicsvqa_images" / "37313.jpeg", BLUE)
    F.write_json(tmp_path / "rel" / "infographicsVQA_val_v1.0_withQT.json", {"dataset_name": "infographicVQA", "data": [
        {"questionId": 98, "question": "Which country?", "image_local_name": "37313.jpeg", "answers": ["india"],
         "answer_type": ["Image span"], "evidence": ["Text"], "operation/reasoning": []},
        {"questionId": 99, "question": "Gone?", "image_local_name": "nope.jpeg", "answers": ["x"]}]})
    ok, gone = load("infovqa", tmp_path / "rel")
    assert ok.sample_id == "98" and ok.media[0].path.endswith("37313.jpeg")
    assert ok.meta == {"answer_type": ["Image span"], "evidence": ["Text"], "operation": []}
    assert "not found" in gone.error
    tsv = F.write_tsv(tmp_path / "InfoVQA_VAL.tsv", [{"index": 3, "question": "Q?", "answer": "['a', 'b']",
                                                      "image": F.b64(RED)}])
    assert load("infovqa", tsv)[0].targets == ["a", "b"]
