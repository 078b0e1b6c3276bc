"""Encoded image bytes -> uint8 arrays, and the one resize every stored or predicted image goes through."""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from cnnforge.data import MAX_IMAGE_SIDE
from cnnforge.errors import DataError


class BadImage(Exception):
    """The bytes are not an image either decoder can read; the message says why."""


def decode_image(data: bytes, grayscale: bool) -> np.ndarray:
    """HxW (grayscale) or HxWx3 RGB uint8; Pillow first (it notices truncated files), OpenCV for what it cannot read."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise BadImage("the file is empty (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as im:
            check_side(im.height, im.width)
            if im.mode.startswith("I;16") or (im.mode == "I" and im.format == "PNG"):
                im = _sixteen_to_eight(im)
            return np.asarray(im.convert("L" if grayscale else "RGB"))
    except UnidentifiedImageError:
        pass
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise BadImage(" ".join(str(exc).split()) or type(exc).__name__) from None
    import cv2

    try:  # OpenCV refuses more pixels than OPENCV_IO_MAX_IMAGE_PIXELS from the header (see cnnforge/__init__.py)
        array = cv2.imdecode(np.frombuffer(data, dtype=np.uint8),
                             cv2.IMREAD_GRAYSCALE if grayscale else cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise BadImage(f"OpenCV refused it ({' '.join(str(exc).split()[-6:])})") from None
    if array is None:
        raise BadImage("neither Pillow nor OpenCV can decode it")
    check_side(*array.shape[:2])
    return array if grayscale else cv2.cvtColor(array, cv2.COLOR_BGR2RGB)


def check_side(height: int, width: int) -> None:
    """An image with a side over :data:`~cnnforge.data.MAX_IMAGE_SIDE` is refused before it is decoded."""
    if max(height, width) > MAX_IMAGE_SIDE:
        raise BadImage(f"is {height}x{width}; cnnforge reads images with sides up to {MAX_IMAGE_SIDE}")


def _sixteen_to_eight(im: Any) -> Any:
    """A 16-bit greyscale image (PNG, TIFF) scaled to 8 bits, 0..65535 onto 0..255 rounded; Pillow's ``convert``
    would clip every value above 255 to white."""
    from PIL import Image

    wide = np.asarray(im, dtype=np.uint32)
    return Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8))


def image_shape(data: bytes) -> tuple[int, int] | None:
    """(height, width) from the header alone, or None when Pillow cannot tell without decoding."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.height, im.width
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):  # decoding reports it properly
        return None


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` (HxW or HxWxC) at (height, width): area averaging to shrink, linear to grow; channels kept."""
    import cv2

    shrink = image.shape[0] * image.shape[1] > size[0] * size[1]
    out = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return out.reshape(*size, *image.shape[2:])  # cv2 drops a trailing channel axis of 1


def read_image(path: str | os.PathLike[str], channels: int) -> np.ndarray:
    """An image file as uint8 HxWxC with ``channels`` (1: grey, 3: RGB), decoded as ``imagefolder`` decodes it."""
    p = Path(path)
    if not p.is_file():
        raise DataError("is a directory, not an image" if p.is_dir() else "no such image file", where=str(p))
    if channels not in (1, 3):
        raise DataError(f"the model reads {channels}-channel images; image files give 1 (grey) or 3 (RGB)",
                        where=str(p))
    try:
        image = decode_image(p.read_bytes(), grayscale=channels == 1)
    except Exception as exc:  # the decoders' own errors (truncated, unknown format): the file is at fault
        raise DataError(f"not a readable image ({' '.join(str(exc).split())[:160]})", where=str(p),
                        hint="give a PNG, JPEG, BMP, TIFF or WebP file") from None
    return image.reshape(*image.shape[:2], channels)
