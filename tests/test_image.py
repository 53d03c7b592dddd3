"""Image processing: parity with transformers 5.23.0 ``Ernie4_5_VLMoeImageProcessor`` (torchvision backend, the one
AutoProcessor returns) on tiny/huge/extreme-aspect images, every PIL mode, EXIF orientations and every input kind;
smart_resize; typed errors for bad inputs."""

from __future__ import annotations

import base64
import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

from ernie_vl.errors import AspectRatioError, DecompressionBombError, ImageError
from ernie_vl.image import ImageProcessor, ImageProcessorConfig
from ernie_vl.image_transforms import smart_resize

import transformers  # noqa: E402,F401 - part of the test extra: a missing one must fail, not skip
from transformers import Ernie4_5_VLMoeImageProcessor  # noqa: E402
from transformers.models.ernie4_5_vl_moe.image_processing_ernie4_5_vl_moe import smart_resize as ref_smart_resize  # noqa: E402

RNG = np.random.default_rng(1234)


def photo(h, w, channels=3, seed=None):
    """Smooth + noisy content (resampling differences would show)."""
    rng = np.random.default_rng(seed if seed is not None else h * 7919 + w)
    small = rng.integers(0, 256, (max(1, h // 8), max(1, w // 8), channels)).astype(np.float32)
    img = np.kron(small, np.ones((8, 8, 1)))[:h, :w]
    img = np.pad(img, ((0, max(0, h - img.shape[0])), (0, max(0, w - img.shape[1])), (0, 0)), mode="edge")
    return np.clip(img + rng.normal(0, 25, img.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def ref():
    return Ernie4_5_VLMoeImageProcessor()


@pytest.fixture(scope="module")
def ours():
    return ImageProcessor()


def check(ref_out, ours_out):
    assert ours_out["image_grid_thw"].dtype == torch.long
    assert ref_out["image_grid_thw"].tolist() == ours_out["image_grid_thw"].tolist()
    a, b = ref_out["pixel_values"], ours_out["pixel_values"]
    assert a.shape == b.shape and b.dtype == torch.float32 and b.shape[1] == 588
    diff = (a - b).abs().max().item() if a.numel() else 0.0
    assert diff <= 1e-4, diff
    return diff


# ------------------------------------------------------------------------------------------------------- smart_resize
@pytest.mark.parametrize(
    "hw, expected",
    [((561, 278), (560, 280)), ((1024, 1024), (1036, 1036)), ((480, 640), (476, 644)), ((10, 1000), (28, 560))],
)
def test_smart_resize_examples(hw, expected):
    # the checkpoint's image limits (the function's own default max_pixels is 1 003 520)
    assert smart_resize(*hw, factor=28, min_pixels=56 * 56, max_pixels=28 * 28 * 6177) == expected


def test_smart_resize_matches_reference():
    rng = np.random.default_rng(0)
    for _ in range(3000):
        h, w = (int(x) for x in rng.integers(1, 9000, 2))
        if max(h, w) / min(h, w) > 200:
            continue
        for lo, hi in [(56 * 56, 28 * 28 * 6177), (100, 20000), (299 * 784, 1196 * 784), (56 * 56, 14 * 14 * 4 * 1280)]:
            assert smart_resize(h, w, 28, lo, hi) == ref_smart_resize(h, w, 28, lo, hi)
    assert smart_resize(42, 14, 28, 1, 10**9) == ref_smart_resize(42, 14, 28, 1, 10**9)  # round-half-to-even


def test_aspect_ratio_guard():
    assert smart_resize(10, 2000) == ref_smart_resize(10, 2000)  # exactly 200 is legal
    with pytest.raises(AspectRatioError, match="aspect ratio") as e:
        smart_resize(10, 2001)
    assert isinstance(e.value, ValueError)
    with pytest.raises(ValueError):
        ref_smart_resize(10, 2001)


# ------------------------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize(
    "h, w",
    [(1, 1), (2, 3), (5, 7), (27, 28), (28, 28), (56, 56), (100, 100), (333, 517), (480, 640), (1080, 1920),
     (3000, 4000), (10, 1990), (1990, 10), (28, 5600), (7, 1400), (2047, 13), (4096, 32)],
)  # fmt: skip
def test_sizes_parity(ref, ours, h, w):
    img = photo(h, w)
    check(ref(img, return_tensors="pt"), ours(img))


def test_input_kinds_parity(ref, ours, tmp_path):
    img = photo(123, 321)
    pil = Image.fromarray(img)
    expected = ref(img, return_tensors="pt")
    check(expected, ours(pil))
    check(expected, ours(img.transpose(2, 0, 1).copy()))  # CHW
    check(expected, ours(torch.from_numpy(img)))  # HWC tensor
    check(expected, ours(torch.from_numpy(img).permute(2, 0, 1)))  # CHW tensor (strided)
    # encoded: PNG is lossless, so path / bytes / base64 / data URL / file object all equal the array
    buf = io.BytesIO()
    pil.save(buf, "PNG")
    raw = buf.getvalue()
    path = tmp_path / "x.png"
    path.write_bytes(raw)
    b64 = base64.b64encode(raw).decode()
    check(expected, ours(str(path)))
    check(expected, ours(path))
    check(expected, ours("file://" + str(path)))
    check(expected, ours(raw))
    check(expected, ours(b64))
    check(expected, ours("data:image/png;base64," + b64))
    check(expected, ours(io.BytesIO(raw)))
    check(ref("data:image/png;base64," + b64, return_tensors="pt"), ours("data:image/png;base64," + b64))


def test_batches_parity(ref, ours):
    same = [photo(100, 120, seed=i) for i in range(3)]
    check(ref(same, return_tensors="pt"), ours(same))
    mixed = [photo(100, 120), photo(300, 20), photo(100, 120, seed=5), photo(57, 999)]
    check(ref(mixed, return_tensors="pt"), ours(mixed))
    nested = [[photo(64, 64)], [photo(80, 50), photo(50, 80)]]
    check(ref(nested, return_tensors="pt"), ours(nested))
    stacked = np.stack(same)
    check(ref(stacked, return_tensors="pt"), ours(stacked))


def test_custom_size_parity():
    for lo, hi in [(28 * 28, 56 * 56), (100, 20000), (256 * 256, 640 * 640)]:
        ref = Ernie4_5_VLMoeImageProcessor(size={"shortest_edge": lo, "longest_edge": hi})
        ours = ImageProcessor(ImageProcessorConfig(min_pixels=lo, max_pixels=hi))
        for h, w in [(100, 100), (200, 50), (640, 480), (31, 900)]:
            img = photo(h, w)
            check(ref(img, return_tensors="pt"), ours(img))


def test_float_and_rgba_arrays_parity(ref, ours):
    rng = np.random.default_rng(3)
    f = rng.random((70, 90, 3), dtype=np.float32)
    check(ref(f, return_tensors="pt"), ours(f))
    rgba = photo(70, 90, channels=4)
    check(ref(rgba, return_tensors="pt"), ours(rgba))
    rgba_f = rng.random((70, 90, 4)).astype(np.float32)
    check(ref(rgba_f, return_tensors="pt"), ours(rgba_f))
    gray = photo(70, 90, channels=1)
    check(ref(gray, return_tensors="pt"), ours(gray))


def _mode_images():
    rgba = Image.fromarray(photo(75, 110, channels=4))
    out = {m: rgba.convert(m) for m in ["RGBA", "LA", "L", "CMYK", "1", "I", "F", "RGB", "P"]}
    out["I;16"] = Image.fromarray((photo(75, 110, channels=1)[..., 0].astype(np.uint16) * 257))
    p = rgba.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
    p.info["transparency"] = 3
    out["P+transparency"] = p
    out["PA"] = rgba.convert("PA") if hasattr(Image, "Palette") else rgba
    return out


@pytest.mark.parametrize("mode", list(_mode_images()))
def test_pil_modes_parity(ref, ours, mode, tmp_path):
    im = _mode_images()[mode]
    check(ref(im, return_tensors="pt"), ours(im))
    # the same image saved to a file and loaded by path (transformers decodes files with torchvision)
    fmt = {"CMYK": "JPEG", "L": "JPEG", "RGB": "JPEG", "I": "TIFF", "F": "TIFF"}.get(mode, "PNG")
    if mode == "PA":
        return  # Pillow cannot save PA
    path = tmp_path / f"img.{fmt.lower()}"
    im.save(path, fmt)
    if fmt == "TIFF":
        # transformers cannot decode TIFF files (torchvision has no TIFF decoder); we fall back to Pillow
        out = ours(str(path))
        check(ref(Image.open(path), return_tensors="pt"), out)
        return
    check(ref(str(path), return_tensors="pt"), ours(str(path)))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_parity(ref, ours, tmp_path, orientation):
    im = Image.fromarray(photo(60, 100))
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.jpg"
    im.save(path, "JPEG", exif=exif.tobytes(), quality=92)
    expected = ref(str(path), return_tensors="pt")
    out = ours(str(path))
    check(expected, out)
    rotated = orientation >= 5
    assert out["image_grid_thw"][0, 1:].tolist() == ([8, 4] if rotated else [4, 8])
    check(expected, ours(path.read_bytes()))
    check(expected, ours(base64.b64encode(path.read_bytes()).decode()))
    # PIL inputs are taken as they are (the reference does not apply EXIF to PIL images either)
    check(ref(Image.open(path), return_tensors="pt"), ours(Image.open(path)))


def test_webp_gif_and_bmp(ref, ours, tmp_path):
    im = Image.fromarray(photo(50, 70))
    for fmt in ["WEBP", "GIF"]:
        path = tmp_path / f"x.{fmt.lower()}"
        im.save(path, fmt)
        check(ref(str(path), return_tensors="pt"), ours(str(path)))
    path = tmp_path / "x.bmp"
    im.save(path, "BMP")  # torchvision (and so the reference) cannot decode BMP; Pillow fallback
    check(ref(im, return_tensors="pt"), ours(str(path)))


def test_num_patches(ours, ref):
    for h, w in [(100, 100), (200, 50), (1080, 1920), (31, 4000)]:
        assert ours.num_patches(h, w) == ref.get_number_of_image_patches(h, w, {})
    assert ours.num_patches(100, 100) == 64 and ours.num_patches(200, 50) == 56


# ------------------------------------------------------------------------------------------------------- errors
def test_bad_inputs(ours, tmp_path):
    with pytest.raises(ImageError, match="not found"):
        ours(str(tmp_path / "missing.jpg"))
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="0 bytes"):
        ours(str(empty))
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    with pytest.raises(ImageError, match="junk.jpg"):
        ours(str(junk))
    buf = io.BytesIO()
    Image.fromarray(photo(300, 300)).save(buf, "JPEG")
    raw = buf.getvalue()
    for cut in [len(raw) - 2, len(raw) // 2, 50]:
        with pytest.raises(ImageError, match="truncated|corrupt|cannot decode"):
            ours(raw[:cut])
    buf = io.BytesIO()
    Image.fromarray(photo(300, 300)).save(buf, "PNG")
    with pytest.raises(ImageError):
        ours(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageError, match="remote URLs"):
        ours("https://example.com/cat.jpg")
    with pytest.raises(ImageError, match="base64"):
        ours("data:image/png;base64,@@@not-base64@@@")
    with pytest.raises(ImageError, match="unsupported image input"):
        ours(12345)
    with pytest.raises(AspectRatioError, match="aspect ratio"):
        ours(np.zeros((3, 700, 3), np.uint8))
    with pytest.raises(ImageError, match="channel"):
        ours(np.zeros((10, 10, 7), np.uint8))
    with pytest.raises(ImageError, match="no images"):
        ours([])


def test_animated_gif_is_refused(ours, tmp_path):
    frames = [Image.fromarray(photo(40, 40, seed=i)) for i in range(3)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    with pytest.raises(ImageError, match="animated image with 3 frames"):
        ours(str(path))


def test_decompression_bomb_guard(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (3000, 2000)).save(path)
    small_limit = ImageProcessor(ImageProcessorConfig(max_decoded_pixels=5_000_000))
    with pytest.raises(DecompressionBombError, match="3000x2000"):
        small_limit(str(path))
    with pytest.raises(DecompressionBombError):
        small_limit(Image.new("RGB", (3000, 2000)))
    out = ImageProcessor(ImageProcessorConfig(max_decoded_pixels=6_000_000))(str(path))
    assert out["pixel_values"].shape[1] == 588
    # the default limit (2x Pillow's warning threshold) never affects ordinary images
    assert ImageProcessorConfig().max_decoded_pixels > 100_000_000
    assert math.isfinite(out["pixel_values"].abs().max().item())


def test_error_names_the_input(ours):
    with pytest.raises(ImageError) as e:
        ours([photo(50, 50), b"not an image at all, just some bytes"], sources=["sample 7 image 0", "sample 7 image 1"])
    assert "sample 7 image 1" in str(e.value)
