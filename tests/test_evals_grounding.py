"""Grounding (RefCOCO): image sizes from headers, box parsing, IoU per flavor, the reader and the aggregation."""

import io
import json

import pytest
from PIL import Image

from evals.extract.boxes import parse_box, parse_box_lmms_eval, parse_box_vlmevalkit
from evals.image_size import image_size, media_size
from evals.media import MediaError
from evals.metrics.grounding import center_hit, grounding, iou, iou_lmms_eval, vlmevalkit_pixels, xywh_to_xyxy
from evals.registry import get_benchmark
from evals.sample import Media

try:
    from evals_fixtures import formats as F
except ImportError:  # tests/ imported as a package
    from tests.evals_fixtures import formats as F


def encoded(fmt, size=(37, 23), mode="RGB", **kw):
    buf = io.BytesIO()
    Image.new(mode, size, 0).save(buf, format=fmt, **kw)
    return buf.getvalue()


def jpeg_with_big_exif(size=(37, 23)):
    exif = Image.Exif()
    exif[0x010E] = "x" * 30_000  # ImageDescription: pushes the SOF marker ~30 kB in
    return encoded("JPEG", size, exif=exif.tobytes())


def jpeg_with_big_icc(size=(37, 23)):
    return encoded("JPEG", size, icc_profile=b"\0" * 100_000)  # SOF after 100 kB: past the first read of a file


@pytest.mark.parametrize("data", [
    encoded("PNG"), encoded("JPEG"), encoded("JPEG", progressive=True), jpeg_with_big_exif(), jpeg_with_big_icc(),
    encoded("GIF"), encoded("BMP"), encoded("WEBP"), encoded("WEBP", lossless=True),
    encoded("WEBP", mode="RGBA", exif=b"Exif\0\0"),
], ids=["png", "jpeg", "jpeg-progressive", "jpeg-exif", "jpeg-icc", "gif", "bmp", "webp", "webp-lossless",
        "webp-extended"])
def test_image_size_reads_every_header(data, tmp_path):
    assert image_size(data) == (37, 23)
    path = tmp_path / "image"
    path.write_bytes(data)
    assert media_size(Media(kind="image", path=str(path))) == (37, 23)
    assert media_size(Media(kind="image", data=data)) == (37, 23)


def test_image_size_errors_name_the_problem():
    with pytest.raises(MediaError, match="size"):
        image_size(encoded("PNG")[:12])
    with pytest.raises(MediaError, match="size"):
        image_size(b"\xff\xd8\xff\xe0\x00\x10JFIF")  # header cut before the frame marker
    with pytest.raises(MediaError, match="expected an image"):
        media_size(Media(kind="video", path="/v.mp4"))


# Expected boxes: lmms-eval utils_rec.py parse_float_sequence_within (None where it returns [0, 0, 0, 0]);
# VLMEvalKit refcoco.py RefCOCODataset._parse_prediction; ours per the module docstring of evals.extract.boxes.
BOX_CASES = [
    ("[12, 30, 400, 500]", [12, 30, 400, 500], [12, 30, 400, 500], [12, 30, 400, 500]),
    ("[0.1,0.2,0.3,0.4]", [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4]),
    ("[12 30 400 500]", [12, 30, 400, 500], None, [12, 30, 400, 500]),  # lmms-eval needs commas
    ("[12 , 30, 400, 500]", [12, 30, 400, 500], None, [12, 30, 400, 500]),  # … right after the number
    ("(12,30,400,500)", [12, 30, 400, 500], None, [12, 30, 400, 500]),  # VLMEvalKit: first four numbers
    ("<box>(12,30),(400,500)</box>", [12, 30, 400, 500], None, [12, 30, 400, 500]),
    ('{"bbox_2d": [12, 30, 400, 500], "label": "dog"}', [12, 30, 400, 500], [12, 30, 400, 500], [12, 30, 400, 500]),
    ("<|LOC_12|><|LOC_30|><|LOC_400|><|LOC_500|>", [12, 30, 400, 500], None, [12, 30, 400, 500]),
    ("<|LOC_BEGIN|><|LOC_12|><|LOC_30|><|LOC_400|><|LOC_30|><|LOC_400|><|LOC_500|><|LOC_12|><|LOC_500|><|LOC_END|>",
     [12, 30, 400, 500], None, [12, 30, 400, 30]),  # a 4-point polygon: ours takes its enclosing box
    ("It spans 12 30 400 500", [12, 30, 400, 500], None, [12, 30, 400, 500]),
    ("Image 1 of 2: [12, 30, 400, 500]", [12, 30, 400, 500], [12, 30, 400, 500], [12, 30, 400, 500]),
    ("Image 1 of 2, box 3 4 5 6 7", None, None, [1, 2, 3, 4]),  # ours: not exactly four loose numbers
    ("[1.5e2, 30, 400, 500]", [150, 30, 400, 500], None, [150, 30, 400, 500]),
    ("[-5, 30, 400, 500]", [-5, 30, 400, 500], [-5, 30, 400, 500], [-5, 30, 400, 500]),
    ("no idea", None, None, None),
    ("", None, None, None),
]


@pytest.mark.parametrize("text,ours,lmms,vlmk", BOX_CASES)
def test_box_parsers(text, ours, lmms, vlmk):
    assert parse_box(text) == ours
    assert parse_box_lmms_eval(text) == lmms
    assert parse_box_vlmevalkit(text) == vlmk


# IoU by hand: (a, b, standard IoU as in the official flavor and VLMEvalKit _compute_iou, lmms-eval compute_iou)
IOU_CASES = [
    ([0, 0, 2, 2], [0, 0, 2, 2], 1.0, 1.0),
    ([0, 0, 2, 2], [1, 0, 3, 2], 2 / 6, 2 / 6),
    ([0, 0, 4, 4], [0, 0, 2, 2], 4 / 16, 4 / 16),
    ([0, 0, 2, 2], [2, 0, 4, 2], 0.0, 0.0),  # touching
    ([0, 0, 4, 4], [0, 0, -2, 2], 0.0, 0.0),  # lmms-eval: negative area in the union, no overlap
    ([0, 0, 4, 4], [3, 0, 1, 4], 0.0, 0.0),  # reversed corners overlap nothing
    ([1, 1, 1, 1], [1, 1, 1, 1], 0.0, 0.0),  # empty boxes (the lmms-eval reference divides by zero)
]


@pytest.mark.parametrize("a,b,standard,lmms", IOU_CASES)
def test_iou(a, b, standard, lmms):
    assert iou(a, b) == pytest.approx(standard) and iou(b, a) == pytest.approx(standard)
    assert iou_lmms_eval(a, b) == pytest.approx(lmms)


def test_center_hit_is_the_predicted_centre_inside_the_ground_truth():
    assert center_hit([0, 0, 4, 4], [3, 3, 5, 5])  # centre (4, 4) on the edge counts
    assert not center_hit([0, 0, 4, 4], [4, 4, 6, 6])
    assert center_hit([0, 0, 1, 1], [0, 0, 0, 0])  # lmms-eval's [0, 0, 0, 0] for "no box" hits a box at the origin


GT = xywh_to_xyxy([20, 10, 80, 40])  # [20, 10, 100, 50] in a 200 x 100 image = [100, 100, 500, 500] on 0-1000
SIZE = (200, 100)
# (answer, flavor, parsed box in the flavor's space, IoU)
GROUNDING_CASES = [
    ("[100, 100, 500, 500]", "official", [20, 10, 100, 50], 1.0),
    ("<|LOC_100|><|LOC_100|><|LOC_500|><|LOC_500|>", "official", [20, 10, 100, 50], 1.0),
    ("(100,100),(500,500)", "official", [20, 10, 100, 50], 1.0),
    ("[0.1, 0.1, 0.5, 0.5]", "official", [20, 10, 100, 50], 1.0),  # 0-1 fractions
    ("[500, 500, 100, 100]", "official", [20, 10, 100, 50], 1.0),  # corners reordered
    ("[100, 100, 300, 500]", "official", [20, 10, 60, 50], 0.5),  # exactly the threshold
    ("[-100, 0, 1200, 500]", "official", [0, 0, 200, 50], 3200 / 10000),  # clipped to the image
    ("no box here", "official", None, 0.0),
    ("[0.1, 0.1, 0.5, 0.5]", "lmms-eval", [0.1, 0.1, 0.5, 0.5], 1.0),
    ("[100, 100, 500, 500]", "lmms-eval", [100, 100, 500, 500], 0.0),  # read as fractions: far outside
    ("[0.1 0.1 0.5 0.5]", "lmms-eval", None, 0.0),  # no match → [0, 0, 0, 0]
    ("[100, 100, 500, 500]", "vlmevalkit", [20, 10, 100, 50], 1.0),  # <= 1000: thousandths
    ("[0.1 0.1 0.5 0.5]", "vlmevalkit", [20, 10, 100, 50], 1.0),  # <= 1.5: fractions
    ("[20, 10, 100, 50]", "vlmevalkit", [4, 1, 20, 5], 0.0),  # pixels <= 1000 are read as thousandths
    ("nothing", "vlmevalkit", None, 0.0),
]


@pytest.mark.parametrize("answer,flavor,box,value", GROUNDING_CASES)
def test_grounding_per_flavor(answer, flavor, box, value):
    got_box, got_iou = grounding(answer, GT, SIZE, flavor)
    assert got_iou == pytest.approx(value)
    assert got_box == (None if box is None else pytest.approx(box))


def test_grounding_vlmevalkit_absolute_pixels_and_errors():
    assert vlmevalkit_pixels([1100, 0, 1500, 900], (2000, 1000)) == [1100, 0, 1500, 900]
    with pytest.raises(ValueError, match="size"):
        grounding("[1, 2, 3, 4]", GT, (0, 100))
    with pytest.raises(ValueError, match="flavor"):
        grounding("[1, 2, 3, 4]", GT, SIZE, "lmms")


# --- the benchmark ----------------------------------------------------------------------------------


def refcoco_row(qid, answers, bbox, image):
    return {"question_id": qid, "image": F.image_struct(image, f"{qid}.jpg"), "question": "", "answer": answers,
            "segmentation": [0.0, 0.0], "bbox": bbox, "iscrowd": 0, "file_name": f"COCO_train2014_{qid}.jpg"}


def test_refcoco_hf_variants_explode_expressions_and_keep_pixels(tmp_path):
    green = F.jpeg_bytes((0, 255, 0), size=(200, 100))
    F.write_parquet(tmp_path / "RefCOCO" / "data" / "val-00000-of-00001.parquet", [
        refcoco_row("1", ["left dog", "brown dog"], [20.0, 10.0, 80.0, 40.0], green),
        refcoco_row("2", ["man"], [1.0, 2.0], green),  # broken box
        refcoco_row("3", [], [1.0, 2.0, 3.0, 4.0], green)])  # no expression
    F.write_parquet(tmp_path / "RefCOCOplus" / "data" / "val-00000-of-00001.parquet", [
        refcoco_row("1", ["dog on left"], [0.0, 0.0, 200.0, 100.0], F.png_bytes(size=(50, 40)))])
    F.write_parquet(tmp_path / "RefCOCOplus" / "data" / "testA-00000-of-00001.parquet", [
        refcoco_row("9", ["other split"], [0.0, 0.0, 1.0, 1.0], green)])
    samples = {s.sample_id: s for s in get_benchmark("refcoco").load(tmp_path)}
    assert set(samples) == {"RefCOCO/1/0", "RefCOCO/1/1", "RefCOCO/2/0", "RefCOCO/3/0", "RefCOCO+/1/0"}
    first = samples["RefCOCO/1/0"]
    assert first.question == "left dog" and samples["RefCOCO/1/1"].question == "brown dog"
    assert first.category == "RefCOCO" and first.split == "val" and first.error is None
    assert first.meta["bbox_xyxy"] == [20, 10, 100, 50] and first.meta["image_size"] == [200, 100]
    assert first.targets == ["[100, 100, 500, 500]"] and first.media[0].data == green
    assert samples["RefCOCO+/1/0"].meta["image_size"] == [50, 40]
    assert samples["RefCOCO+/1/0"].targets == ["[0, 0, 4000, 2500]"]  # the box as published, not clipped
    assert "bbox" in samples["RefCOCO/2/0"].error and "expression" in samples["RefCOCO/3/0"].error
    test_a = list(get_benchmark("refcoco").load(tmp_path, split="testA"))
    assert [s.sample_id for s in test_a] == ["RefCOCO+/9/0"]


def test_refcoco_vlmevalkit_tsv_split_labels_and_box_sources(tmp_path):
    image = F.png_bytes(size=(200, 100))
    rows = [
        {"index": 0, "image": F.b64(image), "question": "left dog", "split": "RefCOCO_val",
         "bbox_x1": 20, "bbox_y1": 10, "bbox_x2": 100, "bbox_y2": 50, "width": 200, "height": 100, "answer": ""},
        {"index": 1, "image": "0", "question": "dog", "category": "RefCOCOg val", "answer": "[0.1, 0.1, 0.5, 0.5]"},
        {"index": 2, "image": "0", "question": "cat", "split": "RefCOCO+_testA", "answer": "[20, 10, 100, 50]"},
        {"index": 3, "image": "0", "question": "no box", "split": "RefCOCO_val", "answer": "none"},
    ]
    path = F.write_tsv(tmp_path / "RefCOCO.tsv", rows)
    samples = {s.sample_id: s for s in get_benchmark("refcoco").load(path)}
    assert set(samples) == {"0", "1", "3"}
    assert samples["0"].category == "RefCOCO" and samples["0"].meta["bbox_xyxy"] == [20, 10, 100, 50]
    assert samples["1"].category == "RefCOCOg" and samples["1"].meta["bbox_xyxy"] == [20, 10, 100, 50]
    assert samples["1"].meta["image_size"] == [200, 100] and samples["1"].targets == ["[100, 100, 500, 500]"]
    assert "ground-truth box" in samples["3"].error
    everything = {s.sample_id: s for s in get_benchmark("refcoco").load(path, split="all")}
    assert everything["2"].meta["bbox_xyxy"] == [20, 10, 100, 50] and everything["2"].category == "RefCOCO+"
    # the TSV's question is VLMEvalKit's prompt as stored
    bench = get_benchmark("refcoco")
    assert bench.build_messages(samples["0"], "vlmevalkit")[0]["content"][-1]["text"] == "left dog"


def test_refcoco_aggregate_per_flavor():
    bench = get_benchmark("refcoco")

    def row(sid, category, prediction, error=None):
        meta = {"bbox_xyxy": GT, "image_size": list(SIZE)}
        rec = {"sample_id": sid, "benchmark": "refcoco", "split": "val", "question": "x", "options": "{}",
               "targets": json.dumps(["[100, 100, 500, 500]"]), "category": category, "subcategory": None,
               "group": None, "meta": json.dumps(meta)}
        return rec, prediction, error

    cases = [row("a", "RefCOCO", "[100, 100, 500, 500]"), row("b", "RefCOCO", "[100, 100, 300, 500]"),
             row("c", "RefCOCO+", "[0.1, 0.1, 0.5, 0.5]"), row("d", "RefCOCO+", None, "media: gone")]
    for flavor, accuracy, mean_iou, plus in (("official", 75.0, 2.5 / 4, 50.0), ("lmms-eval", 25.0, 1 / 4, 50.0),
                                             ("vlmevalkit", 75.0, 2.5 / 4, 50.0)):
        rows = []
        for rec, prediction, error in cases:
            extracted, score = (None, None) if error else bench.score(rec, prediction, flavor)
            rows.append(dict(rec, prediction=prediction, extracted=extracted, score=score, error=error))
        out = {(m["metric"], m["category"]): m["value"] for m in bench.aggregate(rows, flavor)}
        assert out[("accuracy", None)] == pytest.approx(accuracy), flavor
        assert out[("mean_iou", None)] == pytest.approx(mean_iou), flavor
        assert out[("accuracy", "RefCOCO+")] == pytest.approx(plus), flavor
        assert out[("errors", None)] == 1
        if flavor == "lmms-eval":
            # IoUs 0, 0, 1, error: only c passes any threshold; centres: (300, 300) and (200, 300) miss [.1, .5]
            assert out[("accuracy@0.1", None)] == 25.0 and out[("accuracy@0.9", None)] == 25.0
            assert out[("center_accuracy", None)] == 25.0


def test_refcoco_prompts_per_flavor():
    from evals.sample import Sample

    bench = get_benchmark("refcoco")
    s = Sample(sample_id="1", benchmark="refcoco", split="val", question="man in red", media=[Media("image", b"x")])

    def text(flavor):
        return bench.build_messages(s, flavor)[0]["content"][-1]["text"]

    # lmms-eval utils_rec.py refcoco_bbox_rec_doc_to_text, verbatim
    assert text("lmms-eval") == (
        "Bounding box coordinates are specified in the format (top-left x, top-left y, bottom-right x, bottom-right "
        "y). All values are floating point numbers bounded between 0 and 1. Please provide the bounding box coordinate "
        "of the region this sentence describes: man in red")
    assert text("official").startswith("Locate the region this sentence describes: man in red\n")
    assert "0 to 1000" in text("official") and text("vlmevalkit") == text("official")  # HF rows: no stored prompt
