"""Folders of images with one PNG mask per object instance: the layout of the
2018 Data Science Bowl nuclei data (BBBC038, `stage1_train`).

```
<root>/<image_id>/images/<image_id>.png     the image
<root>/<image_id>/masks/<mask_id>.png       one binary mask per object
```

`read_instance_mask_folder` returns a `VisionData` with one class (default
`"nucleus"`, detection class 0): the tight box of each mask's pixels (value
> 0) in the pixel-edge xyxy convention (the DSB `instances.csv` inclusive
`x_max` plus 1), the semantic mask as the union of the instance masks
(1 = object, 0 = background), and an int32 instance-id map per image (mask
file `k` in sorted name order has id `k + 1`; `metadata["mask_ids"]` lists
the mask names). Where masks overlap, the later mask's id wins in the map
(the boxes keep each mask's full extent).

Images become uint8 RGB: RGBA drops alpha (DSB images are RGBA with alpha
255), grayscale and palette images are expanded, and 16-bit images keep their
high byte (`x // 256`, as Pillow does for 16-bit colour PNGs), so a 12-bit
microscope image comes out dark: stretch its contrast before saving if it
matters. Files whose names start with `.` are ignored, and so are plain
files directly in `<root>` (a README, CSV tables).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from kerasmtl.data.vision.container import VisionData

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _subfolders(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _is_image_folder(folder: Path) -> bool:
    return (folder / "images" / f"{folder.name}.png").is_file()


def _looks_like_image_folder(folder: Path) -> bool:
    # An image folder whose image is missing or misnamed still has images/ or
    # masks/: accepting it lets the reader name it instead of rejecting the
    # whole root.
    return (folder / "images").is_dir() or (folder / "masks").is_dir()


def _has_layout(folders) -> bool:
    return (
        any(_is_image_folder(f) for f in folders)
        and all(_looks_like_image_folder(f) for f in folders)
    )


def _resolve_root(root) -> Path | None:
    """`root` if its subfolders are image folders, or its single subfolder if
    that one's are (e.g. a data set folder holding `stage1_train/`)."""
    root = Path(root)
    if not root.is_dir():
        return None
    folders = _subfolders(root)
    if _has_layout(folders):
        return root
    if len(folders) == 1 and _has_layout(_subfolders(folders[0])):
        return folders[0]
    return None


def _layout_error(root) -> ValueError:
    """Why `root` is not an instance-mask folder, naming the subfolders that
    break the layout when the others follow it."""
    message = (
        f"{root}: not an instance-mask folder. Expected "
        "<root>/<image_id>/images/<image_id>.png and "
        "<root>/<image_id>/masks/<mask_id>.png for every subfolder."
    )
    root = Path(root)
    if not root.is_dir():
        return ValueError(f"{message} {root} does not exist or is not a folder.")
    folders = _subfolders(root)
    candidates = [root] + (folders if len(folders) == 1 else [])
    for parent in candidates:
        inner = _subfolders(parent)
        bad = [f.name for f in inner if not _looks_like_image_folder(f)]
        if bad and len(bad) < len(inner):
            return ValueError(
                f"{message} In {parent}, {len(bad)} of {len(inner)} subfolders "
                f"have neither images/ nor masks/: {bad[:5]}"
                f"{' ...' if len(bad) > 5 else ''}. Move them out of {parent}, "
                "or add their images/<image_id>.png."
            )
    return ValueError(message)


def is_instance_mask_folder(path: str | os.PathLike) -> bool:
    """Whether `path` has the DSB-2018 layout: every subfolder `<id>` holds
    `images/<id>.png` (and, for labelled data, `masks/`). A folder whose single
    subfolder has this layout (such as `dsb2018_nuclei/stage1_train`) counts.
    So does one where some subfolders have `images/` or `masks/` but not their
    image, so that `read_instance_mask_folder` names them.

    Examples:

    >>> import tempfile
    >>> is_instance_mask_folder(tempfile.mkdtemp())
    False
    """
    return _resolve_root(path) is not None


def _read_png(path: Path) -> Image.Image:
    """Opens a PNG file, with errors that name the file."""
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"{path}: empty file (0 bytes). Re-export it or remove it.")
    with open(path, "rb") as f:
        head = f.read(8)
    if head != _PNG_MAGIC:
        raise ValueError(
            f"{path}: not a PNG file (it starts with {head!r}). An instance-mask "
            "folder holds only PNG images and masks."
        )
    try:
        image = Image.open(path)
        image.load()
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"{path}: cannot decode the PNG ({error}).") from None
    return image


def _as_rgb(image: Image.Image, path: Path) -> np.ndarray:
    if image.mode == "P":
        image = image.convert("RGBA")
    array = np.asarray(image)
    if image.mode == "1":
        array = array.astype("uint8") * 255
    elif image.mode.startswith("I"):
        # 16-bit grayscale: keep the high byte (Pillow does so for colour).
        array = (array.astype("int64").clip(0, 65535) >> 8).astype("uint8")
    elif array.dtype != np.uint8:
        raise ValueError(f"{path}: unsupported PNG mode {image.mode!r}.")
    if array.ndim == 2:
        array = array[..., None]
    if array.shape[-1] == 2:  # gray + alpha
        array = array[..., :1]
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return np.ascontiguousarray(array[..., :3])


def _mask_pixels(image: Image.Image) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim == 3:  # RGB(A) or LA masks: any colour channel on
        array = array[..., :3].max(axis=-1) if array.shape[-1] >= 3 else array[..., 0]
    return array > 0


def _checked_pngs(folder: Path) -> list[Path]:
    files = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if not path.is_file() or path.suffix.lower() != ".png":
            raise ValueError(
                f"{path}: not a PNG file. {folder} may hold only PNG files "
                "(names starting with '.' are ignored)."
            )
        files.append(path)
    return files


def _read_one(folder: Path, allow_unlabelled: bool, empty: list):
    """Image, boxes, semantic mask, instance map and mask ids of one folder."""
    image_file = folder / "images" / f"{folder.name}.png"
    if not image_file.is_file():
        found = (
            sorted(p.name for p in image_file.parent.iterdir())[:3]
            if image_file.parent.is_dir()
            else "no images/ folder"
        )
        raise ValueError(
            f"Image folder {folder.name!r} ({folder}) has no image "
            f"images/{image_file.name} (found: {found}); the layout is "
            "<root>/<id>/images/<id>.png. Add or rename the image, or move "
            "the folder out of the data set."
        )
    extra = [p.name for p in _checked_pngs(folder / "images") if p != image_file]
    if extra:
        raise ValueError(
            f"{folder / 'images'}: holds {extra[:3]} besides {image_file.name}; "
            "expected one image per folder."
        )
    image = _as_rgb(_read_png(image_file), image_file)
    height, width = image.shape[:2]
    masks_dir = folder / "masks"
    if not masks_dir.is_dir():
        if allow_unlabelled:
            return image, None, None, None, []
        raise ValueError(
            f"{folder}: no masks/ folder. Every image folder needs "
            f"{masks_dir}/<mask_id>.png (one per object; an empty masks/ folder "
            "means no objects), or pass allow_unlabelled=True to read images "
            "without masks as unlabelled."
        )
    instances = np.zeros((height, width), "int32")
    boxes, mask_ids = [], []
    for path in _checked_pngs(masks_dir):
        png = _read_png(path)
        if png.size != (width, height):
            raise ValueError(
                f"{path}: the mask is {png.size[1]}x{png.size[0]} (HxW) but its "
                f"image {image_file.name} is {height}x{width}."
            )
        pixels = _mask_pixels(png)
        rows, cols = np.flatnonzero(pixels.any(1)), np.flatnonzero(pixels.any(0))
        if rows.size == 0:
            empty.append(str(path))
            continue
        y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        window = instances[y0:y1, x0:x1]
        window[pixels[y0:y1, x0:x1]] = len(boxes) + 1
        boxes.append((x0, y0, x1, y1))
        mask_ids.append(path.stem)
    boxes = np.asarray(boxes, "float32").reshape(-1, 4)
    return image, boxes, (instances > 0).astype("int32"), instances, mask_ids


def read_instance_mask_folder(
    root: str | os.PathLike,
    *,
    class_name: str = "nucleus",
    image_ids: Sequence[str] | None = None,
    allow_unlabelled: bool = False,
) -> VisionData:
    """Reads a DSB-2018-style folder of images with one PNG mask per object.

    A mask file with no pixel > 0 is skipped (its object is not counted), with
    one warning counting such files; `metadata["empty_masks"]` lists them.

    Args:
        root: the folder holding one subfolder per image (or a folder whose
            single subfolder does, e.g. `dsb2018_nuclei/` with
            `stage1_train/`).
        class_name: str. Name of the one object class. Defaults to
            `"nucleus"`.
        image_ids: sequence of str or None. Read only these images (folder
            names), in this order. Defaults to `None` (all, sorted by name).
        allow_unlabelled: bool. Read an image folder without `masks/` as an
            image with missing labels (boxes and mask None), e.g. DSB's
            `stage1_test`. Defaults to `False` (an error).

    Returns:
        A `VisionData` with `class_names=[class_name]`, `mask_class_names=
        ["background", class_name]`, instance maps, and `metadata` with
        `source`, `mask_ids` (per image) and `empty_masks`.

    Raises:
        ValueError: naming the file or folder: a folder without the image or
            without `masks/`, a non-PNG or 0-byte file, an undecodable PNG, a
            mask whose size differs from its image.
    """
    resolved = _resolve_root(root)
    if resolved is None:
        raise _layout_error(root)
    folders = _subfolders(resolved)
    if image_ids is not None:
        known = {f.name: f for f in folders}
        unknown = [i for i in image_ids if i not in known]
        if unknown:
            raise ValueError(
                f"{resolved}: no image folder(s) {unknown[:5]} "
                f"({len(unknown)} unknown of {len(image_ids)} requested)."
            )
        folders = [known[i] for i in image_ids]
    empty: list[str] = []
    columns = list(zip(*(_read_one(f, allow_unlabelled, empty) for f in folders)))
    if not columns:
        columns = [[]] * 5
    images, boxes, masks, instances, mask_ids = (list(c) for c in columns)
    if empty:
        warnings.warn(
            f"{resolved}: skipped {len(empty)} empty mask file(s) (no pixel > 0), "
            f"e.g. {empty[0]}. Their objects are not in the labels.",
            stacklevel=2,
        )
    return VisionData(
        images,
        boxes,
        [None if b is None else np.zeros(len(b), "int32") for b in boxes],
        masks,
        class_names=[class_name],
        instance_masks=instances,
        ids=[f.name for f in folders],
        metadata={"source": str(resolved), "mask_ids": mask_ids, "empty_masks": empty},
    )
