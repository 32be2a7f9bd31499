"""discomfort.images: files <-> ComfyUI IMAGE tensors ([B, H, W, C] float32 in 0..1)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from discomfort.errors import ImageFileError, InvalidArgumentError, WrongTypeError
from discomfort.images import open_image_as_tensor, save_comfy_image_to_disk

STEP = 1 / 255 + 1e-6


def rand_image(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


# --- round trips --------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".png", ".webp"])
def test_round_trip_is_within_one_step(tmp_path, suffix):
    image = rand_image(1, 12, 20, 3)
    written = save_comfy_image_to_disk(image, tmp_path / f"a{suffix}")
    assert written == [tmp_path / f"a{suffix}"]
    loaded = open_image_as_tensor(written[0])
    assert loaded.shape == (1, 12, 20, 3) and loaded.dtype == torch.float32
    assert (loaded - image).abs().max() <= STEP
    assert loaded.min() >= 0 and loaded.max() <= 1


def test_jpeg_is_written_as_jpeg_and_drops_alpha(tmp_path):
    image = torch.full((1, 16, 16, 4), 0.5)
    (path,) = save_comfy_image_to_disk(image, tmp_path / "a.JPG")
    with Image.open(path) as img:
        assert (img.format, img.mode) == ("JPEG", "RGB")
    assert (open_image_as_tensor(path) - 0.5).abs().max() < 0.02


def test_rgba_round_trip_gives_mask_one_minus_alpha(tmp_path):
    image = rand_image(1, 8, 10, 4, seed=1)
    (path,) = save_comfy_image_to_disk(image, tmp_path / "rgba.png")
    rgb, mask = open_image_as_tensor(path, with_mask=True)
    assert rgb.shape == (1, 8, 10, 3) and mask.shape == (1, 8, 10) and mask.dtype == torch.float32
    assert (rgb - image[..., :3]).abs().max() <= STEP
    assert (mask - (1 - image[..., 3])).abs().max() <= STEP


def test_numpy_and_half_precision_and_hwc_inputs(tmp_path):
    array = np.random.default_rng(0).random((6, 7, 3))
    (p1,) = save_comfy_image_to_disk(array, tmp_path / "np.png")  # [H, W, C], float64
    assert np.abs(open_image_as_tensor(p1)[0].numpy() - array).max() <= STEP
    for dtype in (torch.float16, torch.bfloat16):
        image = rand_image(1, 5, 5, 3).to(dtype)
        (p2,) = save_comfy_image_to_disk(image, tmp_path / f"{str(dtype)[6:]}.png")
        assert (open_image_as_tensor(p2) - image.float()).abs().max() <= STEP


def test_values_are_clamped_and_nan_is_black(tmp_path):
    image = torch.tensor([[[[-1.0, 2.0, float("nan")]]]])
    (path,) = save_comfy_image_to_disk(image, tmp_path / "c.png")
    assert open_image_as_tensor(path).flatten().tolist() == [0.0, 1.0, 0.0]


# --- batches, paths, formats --------------------------------------------------------------

def test_batch_is_written_as_numbered_files_in_created_directories(tmp_path):
    batch = rand_image(3, 4, 5, 3, seed=2)
    target = tmp_path / "new" / "deeper" / "shot.png"
    written = save_comfy_image_to_disk(batch, target)
    assert [p.name for p in written] == ["shot_00000.png", "shot_00001.png", "shot_00002.png"]
    assert all(p.parent == target.parent for p in written)
    assert not target.exists()
    for i, p in enumerate(written):
        assert (open_image_as_tensor(p)[0] - batch[i]).abs().max() <= STEP


def test_single_image_creates_parent_directories(tmp_path):
    target = tmp_path / "x" / "y" / "one.webp"
    assert save_comfy_image_to_disk(rand_image(1, 2, 2, 3), str(target)) == [target]
    assert target.is_file()


def test_format_argument_and_suffixless_path(tmp_path):
    (p1,) = save_comfy_image_to_disk(rand_image(2, 2, 3), tmp_path / "image.data", format="JPG")
    (p2,) = save_comfy_image_to_disk(rand_image(2, 2, 3), tmp_path / "noext")
    with Image.open(p1) as a, Image.open(p2) as b:
        assert (a.format, b.format) == ("JPEG", "PNG")


# --- loading: orientation and modes -------------------------------------------------------

def two_halves(width=32, height=16):
    """Left half red, right half blue: easy to follow through a rotation, even in a JPEG."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 2, 0] = 255
    pixels[:, width // 2 :, 2] = 255
    return Image.fromarray(pixels)


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_exif_orientation_is_applied(tmp_path, suffix):
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the stored image must be turned 90 degrees clockwise
    path = tmp_path / f"rotated{suffix}"
    two_halves().save(path, exif=exif)
    loaded = open_image_as_tensor(path)
    assert loaded.shape == (1, 32, 16, 3)  # width and height swapped
    top, bottom = loaded[0, :12].mean(dim=(0, 1)), loaded[0, -12:].mean(dim=(0, 1))
    assert top[0] > 0.9 and top[2] < 0.1  # the left (red) half is now on top
    assert bottom[2] > 0.9 and bottom[0] < 0.1


def test_grayscale_is_replicated_to_rgb(tmp_path):
    grey = np.arange(0, 240, 10, dtype=np.uint8).reshape(4, 6)
    Image.fromarray(grey).save(tmp_path / "l.png")
    image, mask = open_image_as_tensor(tmp_path / "l.png", with_mask=True)
    assert image.shape == (1, 4, 6, 3)
    for c in range(3):
        assert torch.equal(image[0, ..., c], torch.from_numpy(grey / np.float32(255)))
    assert mask.shape == (1, 4, 6) and not mask.any()


def test_sixteen_bit_grayscale_keeps_precision(tmp_path):
    values = np.array([[0, 257, 1000], [30000, 65000, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "16.png")
    with Image.open(tmp_path / "16.png") as img:
        assert img.mode.startswith("I")
    image = open_image_as_tensor(tmp_path / "16.png")
    assert image.shape == (1, 2, 3, 3)
    assert torch.allclose(image[0, ..., 1], torch.from_numpy(values / 65535.0).float())


def test_palette_with_transparency_gives_colors_and_mask(tmp_path):
    img = Image.new("P", (3, 2))
    img.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    img.putdata([0, 1, 0, 1, 1, 0])
    img.save(tmp_path / "p.png", transparency=1)  # index 1 (green) is fully transparent
    image, mask = open_image_as_tensor(tmp_path / "p.png", with_mask=True)
    expected_red = torch.tensor([[1, 0, 1], [0, 0, 1]], dtype=torch.float32)
    assert torch.equal(image[0, ..., 0], expected_red)
    assert torch.equal(image[0, ..., 1], 1 - expected_red)
    assert torch.equal(mask[0], 1 - expected_red)  # 1 where transparent


def test_grey_with_alpha_and_cmyk(tmp_path):
    la = Image.merge("LA", [Image.new("L", (4, 4), 200), Image.new("L", (4, 4), 51)])
    la.save(tmp_path / "la.png")
    image, mask = open_image_as_tensor(tmp_path / "la.png", with_mask=True)
    assert torch.allclose(image, torch.full((1, 4, 4, 3), 200 / 255))
    assert torch.allclose(mask, torch.full((1, 4, 4), 1 - 51 / 255))

    Image.new("CMYK", (5, 3), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    image = open_image_as_tensor(tmp_path / "cmyk.jpg")
    assert image.shape == (1, 3, 5, 3)
    assert image[0, 0, 0, 0] > 0.9 and image[0, 0, 0, 1:].max() < 0.1  # red


# --- errors -------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        open_image_as_tensor(tmp_path / "nope.png")


def test_not_an_image_names_the_path(tmp_path):
    (tmp_path / "notes.png").write_text("hello, not an image")
    with pytest.raises(ImageFileError, match=r"notes\.png.*not a readable image") as caught:
        open_image_as_tensor(tmp_path / "notes.png")
    assert isinstance(caught.value, ValueError)  # errors.py's classes keep the built-in's


def test_truncated_image_is_a_value_error(tmp_path):
    save_comfy_image_to_disk(rand_image(1, 64, 64, 3), tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.png"):
        open_image_as_tensor(tmp_path / "cut.png")


@pytest.mark.parametrize(
    "shape", [(1, 3, 8, 8), (8, 8), (2, 8, 8, 2), (1, 1, 0, 3), (1, 8, 8, 3, 1)]
)
def test_wrong_shapes_name_received_and_expected(tmp_path, shape):
    received = re.escape(f"got shape {list(shape)}")
    with pytest.raises(ValueError, match=r"\[B, H, W, C\].*" + received):
        save_comfy_image_to_disk(torch.zeros(shape), tmp_path / "x.png")
    assert not list(tmp_path.iterdir())


def test_channels_first_gets_a_hint(tmp_path):
    with pytest.raises(InvalidArgumentError, match="channels must come last"):
        save_comfy_image_to_disk(torch.zeros(1, 3, 8, 8), tmp_path / "x.png")


@pytest.mark.parametrize("value", [torch.zeros(1, 2, 2, 3, dtype=torch.uint8),
                                   np.zeros((2, 2, 3), dtype=np.int64), [[[0.0, 0.0, 0.0]]]])
def test_wrong_types_are_type_errors(tmp_path, value):
    with pytest.raises(WrongTypeError, match="expected a") as caught:
        save_comfy_image_to_disk(value, tmp_path / "x.png")
    assert isinstance(caught.value, TypeError)


def test_unknown_suffix_or_format(tmp_path):
    with pytest.raises(ValueError, match=r"\.bmp"):
        save_comfy_image_to_disk(rand_image(2, 2, 3), tmp_path / "x.bmp")
    with pytest.raises(ValueError, match="tiff"):
        save_comfy_image_to_disk(rand_image(2, 2, 3), tmp_path / "x.png", format="tiff")
