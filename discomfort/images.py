"""Image files <-> ComfyUI IMAGE tensors.

ComfyUI passes images as float32 tensors ``[B, H, W, C]`` in 0..1 and masks as ``[B, H, W]``.
These helpers read one file into that convention (as ComfyUI's LoadImage node does) and write
a batch back to files (as its SaveImage node does), so a script can feed and collect workflow
values without a ComfyUI node in between. ``image_grid`` lays images out as one PIL image, which
Jupyter shows inline when it is a cell's last expression.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from .errors import ImageFileError, InvalidArgumentError, WrongTypeError

__all__ = ["image_grid", "image_to_tensor", "open_image_as_tensor", "save_comfy_image_to_disk"]

# Suffix -> Pillow format name, and the options each is written with. JPEG cannot be lossless,
# so it gets a high quality; WebP is written lossless so a round trip keeps the pixels.
_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
_SAVE_OPTIONS: dict[str, dict[str, Any]] = {
    "PNG": {"compress_level": 4}, "JPEG": {"quality": 95}, "WEBP": {"lossless": True}}
_SIXTEEN_BIT = {"I", "I;16", "I;16B", "I;16L", "I;16N"}


def open_image_as_tensor(path: str | os.PathLike, *, with_mask: bool = False):
    """Read an image file as a ComfyUI IMAGE: a float32 tensor ``[1, H, W, 3]`` in 0..1.

    The EXIF orientation is applied (a phone photo comes out upright, as LoadImage shows it)
    and any mode becomes RGB; 16-bit greyscale keeps its precision (scaled by 1/65535) rather
    than going through 8 bits. Only the first frame of an animated file is read.

    With ``with_mask=True`` returns ``(image, mask)``, mask ``[1, H, W]`` float32 following
    LoadImage: ``1 - alpha`` (1 where transparent), from an alpha band or a ``transparency``
    entry; all zeros when the image has no alpha (LoadImage gives a 64x64 zero mask there; this
    one has the image's size, so it can be used with the image directly).

    Raises FileNotFoundError (or another OSError) when the file cannot be opened, and
    ImageFileError (a ValueError) naming the path when its content is not a readable image.
    """
    import torch

    path = Path(path)
    with open(path, "rb") as fh:  # missing file, directory, permission: the OS's own errors
        try:
            with Image.open(fh) as opened:
                opened.load()
                img = ImageOps.exif_transpose(opened)
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageFileError(f"{path}: not a readable image file ({exc})") from exc

    image = image_to_tensor(img)
    if not with_mask:
        return image

    if "A" in img.getbands():
        alpha = img.getchannel("A")
    elif "transparency" in img.info and img.mode not in _SIXTEEN_BIT:
        alpha = img.convert("RGBA").getchannel("A")
    else:
        alpha = None
    if alpha is None:
        mask = torch.zeros((1, img.height, img.width), dtype=torch.float32)
    else:
        mask = 1.0 - torch.from_numpy(np.asarray(alpha, dtype=np.float32) / 255.0)[None]
    return image, mask


def image_to_tensor(img: Image.Image):
    """A PIL image as a ComfyUI IMAGE ``[1, H, W, 3]`` float32 in 0..1 (16-bit greyscale
    keeps its precision)."""
    import torch

    if img.mode in _SIXTEEN_BIT:
        grey = np.clip(np.asarray(img, dtype=np.float32) / 65535.0, 0.0, 1.0)
        rgb = np.repeat(grey[..., None], 3, axis=2)
    else:
        rgb = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(rgb))[None]


def save_comfy_image_to_disk(
    tensor, path: str | os.PathLike, *, format: str | None = None
) -> list[Path]:
    """Write every image of a ComfyUI IMAGE batch to disk; return the paths written.

    ``tensor`` is a float torch tensor or numpy array ``[B, H, W, C]`` (or ``[H, W, C]`` for
    one image), C = 3 (RGB) or 4 (RGBA), values in 0..1; values outside are clamped, NaN is
    written as 0. Pixels are rounded to 8 bits, so opening the file gives back each value
    within 1/255.

    A single image is written to ``path`` itself. A batch of B > 1 is written beside it as
    ``<stem>_00000<suffix>``, ``<stem>_00001<suffix>``, ... (``path`` itself is not written),
    so the files of one batch sort in order. Parent directories are created.

    ``format`` ("png", "jpeg"/"jpg", "webp") overrides the suffix; without it the suffix
    decides, and a path with no suffix is written as PNG. JPEG drops the alpha channel;
    WebP is written lossless.
    """
    path = Path(path)
    fmt = _pick_format(path, format)
    batch = _as_uint8_batch(tensor)

    if len(batch) == 1:
        targets = [path]
    else:
        targets = [path.with_name(f"{path.stem}_{i:05d}{path.suffix}") for i in range(len(batch))]
    path.parent.mkdir(parents=True, exist_ok=True)
    for pixels, target in zip(batch, targets, strict=True):
        img = Image.fromarray(pixels)  # RGB or RGBA, from the last axis
        if fmt == "JPEG" and img.mode == "RGBA":
            img = img.convert("RGB")
        img.save(target, format=fmt, **_SAVE_OPTIONS[fmt])
    return targets


def image_grid(images, columns: int | None = None, *, scale: int = 1, gap: int = 4,
               background="white") -> Image.Image:
    """One RGB PIL image of ``images`` laid out in a grid, row by row, ``columns`` to a row.

    ``images`` is a PIL image, an IMAGE tensor or array (``[B, H, W, C]`` or ``[H, W, C]``,
    C = 3 or 4, values in 0..1, as ``save_comfy_image_to_disk`` takes), or a list (any
    iterable: a dict's values...) of those, nested or not; every image of a batch takes its own
    cell. Without ``columns`` the grid is as square as it can be (``ceil(sqrt(n))`` columns);
    it never has more columns than images. Each cell is as large as the largest image; a
    smaller one is centred in it. ``scale`` enlarges every image that many times, pixels kept
    sharp (64x64 pictures are hard to see at 1); ``gap`` pixels of ``background`` separate the
    cells; transparent pixels show it.

    In Jupyter a PIL image that is the last expression of a cell is shown inline.
    """
    for name, value, least in (("columns", columns, 1), ("scale", scale, 1), ("gap", gap, 0)):
        if value is None and name == "columns":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise InvalidArgumentError(f"{name} must be a whole number >= {least}, got {value!r}")
    pictures = _grid_pictures(images)
    if not pictures:
        raise InvalidArgumentError("image_grid needs at least one image")
    count = len(pictures)
    columns = min(columns or math.ceil(math.sqrt(count)), count)
    rows = math.ceil(count / columns)
    cell_w = max(p.width for p in pictures) * scale
    cell_h = max(p.height for p in pictures) * scale
    sheet = Image.new("RGB", (columns * (cell_w + gap) - gap, rows * (cell_h + gap) - gap),
                      background)
    for index, picture in enumerate(pictures):
        if scale != 1:
            picture = picture.resize((picture.width * scale, picture.height * scale),
                                     Image.Resampling.NEAREST)
        row, column = divmod(index, columns)
        at = (column * (cell_w + gap) + (cell_w - picture.width) // 2,
              row * (cell_h + gap) + (cell_h - picture.height) // 2)
        sheet.paste(picture, at, picture if picture.mode == "RGBA" else None)
    return sheet


def _grid_pictures(images) -> list[Image.Image]:
    """``images`` as a flat list of RGB or RGBA PIL images."""
    if isinstance(images, Image.Image):
        has_alpha = "A" in images.getbands() or "transparency" in images.info
        if images.mode in _SIXTEEN_BIT:  # Pillow's RGB of 16-bit pixels clips: scale them
            images = Image.fromarray(np.rint(
                np.clip(np.asarray(images, dtype=np.float32) / 257.0, 0, 255)).astype(np.uint8))
        return [images.convert("RGBA" if has_alpha else "RGB")]
    torch = sys.modules.get("torch")
    if isinstance(images, np.ndarray) or (torch is not None and isinstance(images, torch.Tensor)):
        return [Image.fromarray(pixels) for pixels in _as_uint8_batch(images)]
    if isinstance(images, (str, bytes, os.PathLike)) or not hasattr(images, "__iter__"):
        raise WrongTypeError("image_grid takes PIL images, IMAGE tensors or arrays, or a list of "
                             f"them; got {type(images).__name__}")
    return [picture for item in images for picture in _grid_pictures(item)]


def _pick_format(path: Path, format: str | None) -> str:
    """The Pillow format name, from ``format`` if given, else from the path's suffix."""
    if format is not None:
        fmt = _FORMATS.get("." + str(format).lower().lstrip("."))
        if fmt is None:
            raise InvalidArgumentError(f"format {format!r} is not supported; use one of png, jpeg, "
                                       "jpg, webp")
        return fmt
    if not path.suffix:
        return "PNG"
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InvalidArgumentError(f"{path}: cannot tell the image format from the suffix "
                                   f"{path.suffix!r}; use .png, .jpg, .jpeg or .webp, or pass format=")
    return fmt


def _as_uint8_batch(tensor) -> np.ndarray:
    """A ``[B, H, W, C]`` uint8 array from a float tensor/array, checked and clamped."""
    torch = sys.modules.get("torch")  # a tensor exists only once torch is imported

    if torch is not None and isinstance(tensor, torch.Tensor):
        if not tensor.is_floating_point():
            raise WrongTypeError(f"expected a float tensor, values in 0..1; got dtype {tensor.dtype}")
        array = tensor.detach().to("cpu", torch.float32).numpy()
    elif isinstance(tensor, np.ndarray):
        if not np.issubdtype(tensor.dtype, np.floating):
            raise WrongTypeError(f"expected a float array with values in 0..1, got dtype "
                                 f"{tensor.dtype}")
        array = tensor.astype(np.float32, copy=False)
    else:
        raise WrongTypeError(f"expected a torch.Tensor or numpy.ndarray, got {type(tensor).__name__}")

    shape = tuple(array.shape)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[3] not in (3, 4) or 0 in array.shape:
        hint = " (channels must come last)" if array.ndim == 4 and array.shape[1] in (3, 4) else ""
        raise InvalidArgumentError(f"expected an image of shape [B, H, W, C] or [H, W, C] with "
                                   f"C = 3 or 4, got shape {list(shape)}{hint}")
    array = np.nan_to_num(array, nan=0.0, posinf=1.0, neginf=0.0)
    return np.rint(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
