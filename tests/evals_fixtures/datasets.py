"""One tiny dataset per registered benchmark, in one of its published formats.

``build_all(root)`` returns ``{benchmark: data_path}`` (``None`` for ``demo``). Each dataset has two or
three good rows and, where the format allows, one broken row, so a caller sees both paths. Useful for
pipeline tests as well: ``get_benchmark(name).load(path)`` works on every entry.
"""

from __future__ import annotations

from pathlib import Path

from .formats import b64, image_struct, jpeg_bytes, png_bytes, write_image, write_json, write_jsonl, write_parquet, \
    write_tsv, write_video

RED, BLUE = png_bytes((255, 0, 0)), jpeg_bytes((0, 0, 255))


def build_all(root: Path) -> dict[str, Path | None]:
    root = Path(root)
    paths: dict[str, Path | None] = {}

    paths["mmmu"] = root / "mmmu"
    write_parquet(paths["mmmu"] / "Art" / "validation-00000-of-00001.parquet", [
        {"id": "validation_Art_1", "question": "Which colour is <image 1>?", "options": "['red', 'blue']",
         "answer": "A", "question_type": "multiple-choice", "image_1": image_struct(RED), "image_2": None},
        {"id": "validation_Art_2", "question": "How many? <image 1> <image 2>", "options": "[]", "answer": "2",
         "question_type": "open", "image_1": image_struct(RED), "image_2": image_struct(BLUE)},
    ], image_columns=("image_1", "image_2"))

    paths["mmbench"] = write_tsv(root / "MMBench_DEV_EN.tsv", [
        {"index": 1, "question": "Animal?", "A": "cat", "B": "dog", "answer": "A", "category": "c",
         "l2-category": "l", "split": "dev", "image": b64(RED)},
        {"index": 1000001, "question": "Animal?", "A": "dog", "B": "cat", "answer": "B", "category": "c",
         "l2-category": "l", "split": "dev", "image": "1"},
        {"index": 2, "question": "Broken", "A": "x", "B": "y", "answer": "C", "category": "c", "split": "dev",
         "image": b64(RED)},
    ])

    paths["mme"] = root / "mme"
    write_parquet(paths["mme"] / "data" / "test-00000-of-00001.parquet", [
        {"question_id": "color/1.png", "question": "Is it red? Please answer yes or no.", "answer": "Yes",
         "category": "color", "image": image_struct(RED)},
        {"question_id": "color/1.png", "question": "Is it blue? Please answer yes or no.", "answer": "No",
         "category": "color", "image": image_struct(RED)},
    ])

    paths["chartqa"] = root / "chartqa"
    write_image(paths["chartqa"] / "test" / "png" / "1.png", RED)
    write_json(paths["chartqa"] / "test" / "test_human.json", [{"imgname": "1.png", "query": "Max?", "label": "20"}])
    write_json(paths["chartqa"] / "test" / "test_augmented.json",
               [{"imgname": "1.png", "query": "Min?", "label": "0.45"}, {"imgname": "gone.png", "query": "?", "label": "1"}])

    paths["docvqa"] = root / "docvqa"
    write_image(paths["docvqa"] / "documents" / "d.png", RED)
    write_json(paths["docvqa"] / "val_v1.0.json", {"data": [
        {"questionId": 1, "question": "Title?", "image": "documents/d.png", "answers": ["Annual Report"]},
        {"questionId": 2, "question": "Year?", "image": "documents/d.png", "answers": ["1998"]}]})

    paths["textvqa"] = root / "textvqa"
    write_image(paths["textvqa"] / "train_images" / "t.jpg", BLUE)
    write_json(paths["textvqa"] / "TextVQA_0.5.1_val.json", {"data": [
        {"question_id": 1, "image_id": "t", "question": "what brand?", "answers": ["nike"] * 9 + ["adidas"]}]})

    paths["ai2d"] = root / "ai2d"
    write_parquet(paths["ai2d"] / "data" / "test-00000-of-00001.parquet", [
        {"question": "Which stage?", "options": ["egg", "larva", "adult"], "answer": "1", "image": image_struct(RED)}],
        list_columns=("options",))

    paths["ocrbench"] = write_tsv(root / "OCRBench.tsv", [
        {"index": 0, "question": "What is written?", "answer": str(["hello"]), "category": "Regular Text Recognition",
         "image": b64(RED)},
        {"index": 1, "question": "Formula?", "answer": str(["x^2"]),
         "category": "Handwritten Mathematical Expression Recognition", "image": b64(BLUE)}])

    paths["pope"] = root / "pope"
    write_image(paths["pope"] / "val2014" / "COCO_val2014_1.jpg", BLUE)
    for split, label in (("random", "yes"), ("adversarial", "no")):
        write_jsonl(paths["pope"] / "output" / "coco" / f"coco_pope_{split}.json", [
            {"question_id": 1, "image": "COCO_val2014_1.jpg", "text": "Is there a dog in the image?", "label": label}])

    paths["scienceqa"] = root / "scienceqa"
    write_json(paths["scienceqa"] / "problems.json", {"7": {
        "question": "Which is a gas?", "choices": ["air", "rock"], "answer": 0, "hint": "Think.", "image": "image.png",
        "subject": "natural science", "topic": "physics", "grade": "grade3"}})
    write_json(paths["scienceqa"] / "pid_splits.json", {"test": ["7"]})
    write_image(paths["scienceqa"] / "images" / "test" / "7" / "image.png", RED)

    paths["realworldqa"] = root / "realworldqa"
    write_parquet(paths["realworldqa"] / "data" / "test-00000-of-00001.parquet", [
        {"question": "Which way?\nA. left\nB. right\nPlease answer directly with only the letter of the correct "
                     "option and nothing else.", "answer": "B", "image": image_struct(RED)}])

    paths["videomme"] = root / "videomme"
    write_parquet(paths["videomme"] / "videomme" / "test-00000-of-00001.parquet", [
        {"video_id": "001", "duration": "short", "domain": "Knowledge", "sub_category": "Astronomy",
         "videoID": "abc", "question_id": "001-1", "task_type": "Counting Problem", "question": "How many?",
         "options": ["A. 1.", "B. 2.", "C. 3.", "D. 4."], "answer": "B"},
        {"video_id": "002", "duration": "long", "domain": "Knowledge", "sub_category": "Astronomy",
         "videoID": "missing", "question_id": "002-1", "task_type": "Counting Problem", "question": "Why?",
         "options": ["A. a", "B. b", "C. c", "D. d"], "answer": "A"}], image_columns=(), list_columns=("options",))
    write_video(paths["videomme"] / "data" / "abc.mp4")

    paths["mvbench"] = root / "mvbench"
    write_json(paths["mvbench"] / "json" / "object_existence.json", [
        {"video": "v1.mp4", "question": "Is there a cube?", "candidates": ["yes", "no"], "answer": "yes"}])
    write_video(paths["mvbench"] / "video" / "clevrer" / "video_validation" / "v1.mp4")

    paths["mmstar"] = root / "mmstar"  # Lin-Chen/MMStar: one mmstar.parquet, options inside the question
    write_parquet(paths["mmstar"] / "mmstar.parquet", [
        {"index": 0, "question": "Which colour?\nOptions: A: red, B: blue, C: green, D: grey", "image": image_struct(RED),
         "answer": "A", "category": "coarse perception", "l2_category": "image scene and topic",
         "meta_info": {"source": "demo", "split": "val", "image_path": "0.png"}}])

    paths["hallusionbench"] = root / "hallusionbench"  # lmms-lab/HallusionBench, split "image"
    write_parquet(paths["hallusionbench"] / "data" / "image-00000-of-00001.parquet", [
        {"category": "VD", "subcategory": "illusion", "visual_input": "1", "set_id": "0", "figure_id": "0",
         "sample_note": "circle", "question_id": str(q), "question": text, "gt_answer_details": "",
         "gt_answer": answer, "filename": "./hallusion_bench/VD/illusion/0_0.png", "image": image_struct(RED)}
        for q, text, answer in ((0, "Is the circle red?", "1"), (1, "Is the circle blue?", "0"))])

    paths["infovqa"] = write_tsv(root / "InfoVQA_VAL.tsv", [
        {"index": 1, "question": "What year?", "answer": str(["2019", "in 2019"]), "image": b64(BLUE)}])

    paths["refcoco"] = root / "RefCOCO"  # lmms-lab/RefCOCO: COCO [x, y, w, h] pixel boxes, several expressions
    write_parquet(paths["refcoco"] / "data" / "val-00000-of-00001.parquet", [
        {"question_id": "7", "image": image_struct(jpeg_bytes((0, 255, 0), size=(20, 10)), "a.jpg"),
         "question": "", "answer": ["green block", "left thing"], "segmentation": [2.0, 1.0, 10.0, 1.0, 10.0, 5.0],
         "bbox": [2.0, 1.0, 8.0, 4.0], "iscrowd": 0, "file_name": "COCO_train2014_000000000007.jpg"}])

    paths["mathvista"] = root / "mathvista"  # AI4Math/MathVista testmini: query = hint + question + choices
    write_parquet(paths["mathvista"] / "data" / "testmini-00000-of-00001.parquet", [
        {"pid": "1", "question": "Which colour is the square?", "image": "images/1.jpg",
         "decoded_image": image_struct(RED), "choices": ["red", "blue"], "unit": None, "precision": None,
         "answer": "red", "question_type": "multi_choice", "answer_type": "text",
         "metadata": {"task": "figure question answering", "skills": ["logical reasoning"], "category": "general-vqa",
                      "context": "synthetic scene", "grade": "elementary school", "language": "english",
                      "source": "demo", "split": "testmini"},
         "query": "Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, at the "
                  "end.\nQuestion: Which colour is the square?\nChoices:\n(A) red\n(B) blue"},
        {"pid": "2", "question": "How many squares?", "image": "images/2.jpg", "decoded_image": image_struct(BLUE),
         "choices": None, "unit": None, "precision": None, "answer": "3", "question_type": "free_form",
         "answer_type": "integer",
         "metadata": {"task": "math word problem", "skills": ["arithmetic reasoning", "logical reasoning"],
                      "category": "math-targeted-vqa", "context": "synthetic scene", "grade": "elementary school",
                      "language": "english", "source": "demo", "split": "testmini"},
         "query": "Hint: Please answer the question requiring an integer answer and provide the final value, e.g., "
                  "1, 2, 3, at the end.\nQuestion: How many squares?"}],
        image_columns=("decoded_image",), list_columns=("choices",))

    paths["mmvet"] = root / "mm-vet"  # the authors' mm-vet.zip: mm-vet.json + images/
    write_image(paths["mmvet"] / "images" / "v1_0.png", RED)
    write_json(paths["mmvet"] / "mm-vet.json", {
        "v1_0": {"imagename": "v1_0.png", "capability": ["rec", "ocr"], "question": "What colour is it?",
                 "answer": "red<OR>crimson"}})

    paths["charxiv"] = root / "CharXiv"  # github princeton-nlp/CharXiv data/ + images.zip unpacked in images/
    write_image(paths["charxiv"] / "images" / "0.jpg", BLUE)
    write_json(paths["charxiv"] / "data" / "reasoning_val.json", {
        "0": {"figure_id": 0, "query": "Which curve peaks first?", "answer": "blue", "inst_category": 1,
              "qa_source": 3}})
    write_json(paths["charxiv"] / "data" / "image_metadata_val.json", {"0": {"category": "cs", "year": "21"}})
    write_json(paths["charxiv"] / "data" / "descriptive_val.json", {"0": {"num_subplots": 2}})

    paths["demo"] = None
    return paths
