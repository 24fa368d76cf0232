"""PASCAL VOC folders (`VOCdevkit/VOC2007`, `VOC2012`) read into `VisionData`.

The folder (`root`) holds `Annotations/<id>.xml` (boxes), `JPEGImages/<id>.jpg`,
`SegmentationClass/<id>.png` (semantic masks, only for the segmentation
subset) and `ImageSets/Main|Segmentation/<split>.txt` (image ids).

- Classes: the 20 VOC classes in `VOC_LABELS` order (the order of tfds and of
  the mask indices), detection class `k` is mask value `k + 1`, `0` is
  background, as the VOC segmentation PNGs have it.
- Boxes: VOC's `bndbox` counts pixels from 1 with both ends inside the
  object, so `xmin - 1, ymin - 1, xmax, ymax` gives xyxy pixel-edge
  coordinates (`kerasmtl.data.vision.container`'s convention; tfds' VOC divides the raw
  values by the size instead, a one-pixel difference at the top-left).
- `difficult` objects are kept by default, flagged in
  `metadata["difficult"]` (`{image id: bool array aligned with its boxes}`,
  keyed by id so that `select` and `split` keep it valid; VOC evaluation
  ignores them), or dropped with `difficult="drop"`.
- Masks: palette PNGs are read with PIL as indices (not colours); the
  boundary/"void" value 255 becomes `-1` (ignored). RGB PNGs are mapped back
  through the VOC colour map. An image without a PNG has a missing mask
  (`None`); an image without an XML file a missing detection label.
"""

from __future__ import annotations

import functools
import os
import warnings
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np

from kerasmtl.boxes import clip_boxes
from kerasmtl.data.tabular.tfds import VOC_LABELS
from kerasmtl.data.vision.container import VisionData

# Mask value of VOC's object boundaries and hard pixels ("void").
VOC_VOID = 255


def voc_palette() -> np.ndarray:
    """The VOC colour map: uint8 `[256, 3]`, row `k` the colour of index `k`
    (bit `j` of `k`'s red/green/blue bits is spread to bit `7 - j // 3`).

    Examples:

    >>> voc_palette()[[0, 1, 15, 255]].tolist()
    [[0, 0, 0], [128, 0, 0], [192, 128, 128], [224, 224, 192]]
    """
    palette = np.zeros((256, 3), "uint8")
    for index in range(256):
        value, colour = index, [0, 0, 0]
        for bit in range(8):
            for channel in range(3):
                colour[channel] |= ((value >> channel) & 1) << (7 - bit)
            value >>= 3
        palette[index] = colour
    return palette


def read_voc(
    root: str | os.PathLike,
    *,
    split: str | None = "train",
    image_set: str = "Segmentation",
    image_set_file: str | os.PathLike | None = None,
    difficult: str = "keep",
    include_masks: bool = True,
    max_images: int | None = None,
) -> VisionData:
    """Reads a PASCAL VOC folder into `VisionData`.

    Args:
        root: the VOC folder (the one holding `Annotations/` and
            `JPEGImages/`, e.g. `VOCdevkit/VOC2012`).
        split: str or None. Image set: `"train"`, `"val"`, `"trainval"` (or
            `"test"`), read from `ImageSets/<image_set>/<split>.txt`. `None`
            reads every image in `JPEGImages/`. Defaults to `"train"`.
        image_set: str. `"Segmentation"` (the images with masks and boxes,
            1464 in VOC2012 train) or `"Main"` (the detection set, 5717; most
            have no mask). Defaults to `"Segmentation"`.
        image_set_file: path or None. A file of image ids (first word of each
            line) used instead of `split`. Defaults to `None`.
        difficult: str. `"keep"` (flagged in `metadata["difficult"]`) or
            `"drop"` difficult objects. Defaults to `"keep"`.
        include_masks: bool. Read the segmentation PNGs; `False` gives missing
            masks. Defaults to `True`.
        max_images: int or None. Read only the first images of the list.
            Defaults to `None` (all).

    Returns:
        A `VisionData` with the 20 `VOC_LABELS` as classes, ids the image ids,
        and `metadata` holding `source`, `difficult` and `dropped_difficult`.

    Raises:
        ValueError: naming the file, for a missing image or split file, an
            XML file that cannot be parsed or names an unknown class, an image
            whose size differs from its XML, or a mask of the wrong size or
            with values other than 0-20 and 255.
    """
    if difficult not in ("keep", "drop"):
        raise ValueError(
            "Invalid value for argument `difficult`. Expected 'keep' or 'drop'. "
            f"Received: difficult={difficult!r}"
        )
    root = Path(root)
    if not (root / "JPEGImages").is_dir():
        raise ValueError(
            f"{root} is not a VOC folder: it has no JPEGImages/. Pass the folder "
            "holding Annotations/ and JPEGImages/ (e.g. VOCdevkit/VOC2012)."
        )
    ids = _image_ids(root, split, image_set, image_set_file)[:max_images]
    out = {key: [] for key in ("images", "boxes", "classes", "masks", "difficult")}
    dropped_difficult, degenerate = 0, []
    for image_id in ids:
        image = _read_image(root / "JPEGImages" / f"{image_id}.jpg")
        xml = root / "Annotations" / f"{image_id}.xml"
        boxes = classes = flags = None
        if xml.is_file():
            boxes, classes, flags = _read_objects(xml, image.shape[:2])
            keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            degenerate += [image_id] * int((~keep).sum())
            if difficult == "drop":
                dropped_difficult += int((keep & flags).sum())
                keep &= ~flags
            boxes, classes, flags = boxes[keep], classes[keep], flags[keep]
        png = root / "SegmentationClass" / f"{image_id}.png"
        mask = (
            _read_mask(png, image.shape[:2])
            if include_masks and png.is_file()
            else None
        )
        for key, value in zip(out, (image, boxes, classes, mask, flags)):
            out[key].append(value)
    if degenerate:
        warnings.warn(
            f"{root}: dropped {len(degenerate)} box(es) with zero or negative size "
            f"after clipping to the image (images {sorted(set(degenerate))[:10]}).",
            stacklevel=2,
        )
    return VisionData(
        out["images"],
        out["boxes"],
        out["classes"],
        out["masks"],
        class_names=VOC_LABELS,
        ids=ids,
        metadata={
            "source": str(root),
            "difficult": dict(zip(ids, out["difficult"])),
            "dropped_difficult": dropped_difficult,
        },
    )


def _image_ids(root, split, image_set, image_set_file):
    if image_set_file is None and split is None:
        ids = sorted(p.stem for p in (root / "JPEGImages").glob("*.jpg"))
        if not ids:
            raise ValueError(f"{root / 'JPEGImages'} has no .jpg images.")
        return ids
    if image_set_file is None:
        if image_set not in ("Main", "Segmentation"):
            raise ValueError(
                "Invalid value for argument `image_set`. Expected 'Main' or "
                f"'Segmentation'. Received: image_set={image_set!r}"
            )
        image_set_file = root / "ImageSets" / image_set / f"{split}.txt"
    path = Path(image_set_file)
    if not path.is_file():
        found = sorted(p.stem for p in path.parent.glob("*.txt"))[:20]
        raise ValueError(
            f"VOC image set file {str(path)!r} does not exist (found: {found}). "
            "Check `split` and `image_set`, or pass split=None to read every image."
        )
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise ValueError(f"VOC image set file {str(path)!r} lists no images.")
    return ids


def _read_image(file):
    from PIL import Image

    if not file.is_file():
        raise ValueError(f"VOC image {str(file)!r} does not exist.")
    try:
        with Image.open(file) as im:
            return np.asarray(im.convert("RGB"))
    except OSError as err:
        raise ValueError(f"Cannot decode VOC image {str(file)!r}: {err}") from None


def _read_objects(xml, image_shape):
    """Boxes (xyxy pixels, clipped), class ids and difficult flags of one XML."""
    try:
        tree = ElementTree.parse(xml).getroot()
        size = tree.find("size")
        shape = (int(size.findtext("height")), int(size.findtext("width")))
    except (ElementTree.ParseError, AttributeError, TypeError, ValueError) as err:
        raise ValueError(
            f"{xml}: not a VOC annotation with <size><height>/<width> ({err})."
        ) from None
    if shape != tuple(image_shape) and 0 not in shape:  # some files say 0x0
        raise ValueError(
            f"{xml}: size {shape[0]}x{shape[1]} (HxW) differs from its image, "
            f"{image_shape[0]}x{image_shape[1]}. Fix the XML or the image."
        )
    boxes, classes, flags = [], [], []
    for k, obj in enumerate(tree.findall("object")):
        name = (obj.findtext("name") or "").strip().lower()
        if name not in VOC_LABELS:
            raise ValueError(
                f"{xml}: object {k} has class {name!r}, not a VOC class "
                f"({list(VOC_LABELS)})."
            )
        try:
            box = obj.find("bndbox")
            x0, y0, x1, y1 = (
                float(box.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax")
            )
        except (AttributeError, TypeError, ValueError):
            raise ValueError(
                f"{xml}: object {k} ({name}) has no numeric "
                "<bndbox><xmin>/<ymin>/<xmax>/<ymax>."
            ) from None
        boxes.append([x0 - 1.0, y0 - 1.0, x1, y1])
        classes.append(VOC_LABELS.index(name))
        flags.append((obj.findtext("difficult") or "0").strip() == "1")
    boxes = clip_boxes(np.asarray(boxes, "float32").reshape(-1, 4), *image_shape)
    return boxes, np.asarray(classes, "int32"), np.asarray(flags, bool)


def _read_mask(png, image_shape):
    from PIL import Image

    try:
        with Image.open(png) as im:
            if im.mode in ("P", "L"):
                mask = np.asarray(im).astype("int32")
            else:
                mask = _colours_to_indices(png, np.asarray(im.convert("RGB")))
    except OSError as err:
        raise ValueError(f"Cannot decode VOC mask {str(png)!r}: {err}") from None
    if mask.shape != tuple(image_shape):
        raise ValueError(
            f"VOC mask {png} is {mask.shape[0]}x{mask.shape[1]} (HxW) but its image "
            f"is {image_shape[0]}x{image_shape[1]}."
        )
    bad = (mask > len(VOC_LABELS)) & (mask != VOC_VOID)
    if bad.any():
        raise ValueError(
            f"VOC mask {png} has values {np.unique(mask[bad])[:10].tolist()}; "
            f"expected 0 (background), 1-{len(VOC_LABELS)} or {VOC_VOID} (void)."
        )
    mask[mask == VOC_VOID] = -1
    return mask


@functools.lru_cache(maxsize=1)
def _palette_lookup():
    """The palette colours as sorted `0xRRGGBB` keys, and the index of each."""
    palette = voc_palette().astype("int32")
    keys = (palette[:, 0] << 16) | (palette[:, 1] << 8) | palette[:, 2]
    order = np.argsort(keys)
    return keys[order], order


def _colours_to_indices(png, rgb):
    keys, order = _palette_lookup()
    pixels = (rgb[..., 0].astype("int32") << 16) | (rgb[..., 1].astype("int32") << 8)
    pixels |= rgb[..., 2]
    position = np.clip(np.searchsorted(keys, pixels), 0, 255)
    found = keys[position] == pixels
    if not found.all():
        colours = np.unique(rgb[~found], axis=0)[:5].tolist()
        raise ValueError(
            f"VOC mask {png} is an RGB image with colours {colours} not in the VOC "
            "colour map. Save masks as palette PNGs of class indices."
        )
    return order[position].astype("int32")
