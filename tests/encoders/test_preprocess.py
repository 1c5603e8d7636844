"""Image preprocessing: accepted formats, orientation, alpha, and every bad-image reason."""

from __future__ import annotations

import io
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from encoders.errors import ImageError
from encoders.preprocess import ImageSpec, decode_image, preprocess_image, sniff_format

SPEC = ImageSpec(size=64, resize=72)


def image_bytes(
    fmt: str = "JPEG", size: tuple[int, int] = (160, 120), color=(200, 30, 30), alpha=False
) -> bytes:
    """An in-memory single-colour image in ``fmt``."""
    mode = "RGBA" if alpha else "RGB"
    image = Image.new(mode, size, color if mode == "RGB" else (*color, 0))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF"])
def test_accepted_formats_give_normalised_chw_float32(fmt: str) -> None:
    out = preprocess_image(image_bytes(fmt), SPEC)
    assert out.shape == (3, 64, 64)
    assert out.dtype == np.float32
    # A red image: the red channel is well above the mean, green and blue below it.
    assert out[0].mean() > 1.0 and out[1].mean() < -1.0 and out[2].mean() < -0.5


def test_sniffs_format_from_bytes_not_from_names() -> None:
    assert sniff_format(image_bytes("PNG")) == "PNG"
    assert sniff_format(image_bytes("WEBP")) == "WEBP"
    assert sniff_format(image_bytes("BMP")) == "BMP"
    assert sniff_format(b"hello world") is None


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"definitely not an image", "undecodable"),
        (image_bytes("BMP"), "unsupported_format"),
        (image_bytes("TIFF"), "unsupported_format"),
        (image_bytes("JPEG")[:200], "undecodable"),
        (image_bytes("PNG")[:60], "undecodable"),
        (b"\xff\xd8\xff" + b"\x00" * 64, "undecodable"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 garbage", "undecodable"),
    ],
    ids=[
        "empty",
        "garbage",
        "bmp",
        "tiff",
        "truncated-jpeg",
        "truncated-png",
        "jpeg-magic-only",
        "webp-garbage",
    ],
)
def test_bad_images_raise_image_error_with_reason(data: bytes, reason: str) -> None:
    with pytest.raises(ImageError) as info:
        preprocess_image(data, SPEC)
    assert info.value.reason == reason


def test_too_many_pixels_is_too_large_before_decoding() -> None:
    with pytest.raises(ImageError) as info:
        preprocess_image(image_bytes("PNG", size=(400, 300)), SPEC, max_pixels=100_000)
    assert info.value.reason == "too_large"


def test_too_many_bytes_is_too_large() -> None:
    with pytest.raises(ImageError) as info:
        preprocess_image(image_bytes("PNG"), SPEC, max_bytes=100)
    assert info.value.reason == "too_large"


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))


@pytest.mark.parametrize("side", [10_000, 20_000])  # warning range and error range of Pillow
def test_decompression_bomb_is_rejected(side: int) -> None:
    with pytest.raises(ImageError) as info:
        preprocess_image(_png_header_only(side, side), SPEC, max_pixels=10**12)
    assert info.value.reason == "decompression_bomb"


def test_exif_orientation_is_applied() -> None:
    # Left half red, right half blue; EXIF 6 means "rotate 90° clockwise to display".
    image = Image.new("RGB", (200, 100), (255, 0, 0))
    image.paste((0, 0, 255), (100, 0, 200, 100))
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes(), quality=95)
    out = decode_image(buffer.getvalue(), SPEC)
    pixels = np.asarray(out, dtype=np.int32)
    top, bottom = pixels[:20].mean(axis=(0, 1)), pixels[-20:].mean(axis=(0, 1))
    assert top[0] > 200 and top[2] < 60  # red moved to the top
    assert bottom[2] > 200 and bottom[0] < 60


def test_transparency_is_composited_on_white() -> None:
    out = decode_image(image_bytes("PNG", alpha=True), SPEC)
    assert np.asarray(out).min() >= 250


def test_grayscale_and_cmyk_become_rgb() -> None:
    for mode in ("L", "CMYK"):
        buffer = io.BytesIO()
        Image.new(mode, (90, 90)).save(buffer, format="JPEG")
        assert decode_image(buffer.getvalue(), SPEC).mode == "RGB"


def test_draft_decoding_of_large_jpeg_matches_full_decoding() -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, size=(30, 40, 3), dtype=np.uint8)
    big = Image.fromarray(base).resize((1600, 1200), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    big.save(buffer, format="JPEG", quality=92)
    fast = np.asarray(decode_image(buffer.getvalue(), SPEC), np.float32)
    full = big.resize((96, 72), Image.Resampling.BILINEAR)
    left = (96 - 64) // 2
    reference = np.asarray(full.crop((left, 4, left + 64, 68)), np.float32)
    assert np.abs(fast - reference).mean() < 6.0


def test_non_square_images_are_resized_on_the_short_side_and_centre_cropped() -> None:
    out = decode_image(image_bytes("PNG", size=(300, 100)), SPEC)
    assert out.size == (64, 64)


def test_thread_pool_results_equal_serial_results() -> None:
    payloads = [image_bytes(fmt, size=(120 + i, 90 + i), color=(i * 9 % 255, 80, 160))
                for i, fmt in enumerate(["JPEG", "PNG", "WEBP", "GIF"] * 6)]  # fmt: skip
    serial = [preprocess_image(p, SPEC) for p in payloads]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(lambda p: preprocess_image(p, SPEC), payloads))
    assert all(np.array_equal(a, b) for a, b in zip(serial, parallel, strict=True))


def test_image_spec_round_trips_and_validates() -> None:
    assert ImageSpec.from_dict(SPEC.to_dict()) == SPEC
    with pytest.raises(ValueError):
        ImageSpec(size=64, resize=32)


@pytest.mark.parametrize(
    "spec",
    [
        SPEC,  # ImageNet mean and std
        ImageSpec(size=16, resize=16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
        ImageSpec(size=16, resize=16, mean=(0.1, 0.7, 0.33), std=(0.9, 0.013, 2.5)),
    ],
)
def test_to_tensor_lookup_equals_the_arithmetic_to_the_bit(spec: ImageSpec) -> None:
    from encoders.preprocess import to_tensor

    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (spec.size, spec.size, 3), dtype=np.uint8)
    pixels[0, :3] = [[0, 0, 0], [255, 255, 255], [127, 128, 1]]  # the table's ends
    expected = (
        pixels.astype(np.float32) * np.float32(1.0 / 255.0) - np.asarray(spec.mean, np.float32)
    ) / np.asarray(spec.std, np.float32)
    got = to_tensor(Image.fromarray(pixels), spec)
    assert got.dtype == np.float32 and got.shape == (3, spec.size, spec.size)
    assert got.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(got, expected.transpose(2, 0, 1))
