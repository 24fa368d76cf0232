"""COCO-format detection and segmentation annotations, read into `VisionData`.

A COCO annotation file is JSON with `images` (`id`, `file_name`, `width`,
`height`), `categories` (`id`, `name`) and `annotations` (`id`, `image_id`,
`category_id`, `bbox` as `[x, y, width, height]` pixels, `segmentation`,
`iscrowd`). `read_coco` turns it into:

- boxes: `bbox` converted to xyxy pixels, clipped to the image; boxes with
  zero or negative size after clipping are dropped with one warning that
  counts them and names their annotation ids;
- classes: category ids remapped to contiguous `0..K-1` in `categories`
  order (default: all categories sorted by id); `metadata["category_ids"]`
  keeps the COCO id of each class;
- masks: a semantic class map per image, `category index + 1` on an object's
  pixels and `0` (background) elsewhere, rasterised from polygons and from
  RLE (uncompressed `counts` lists and compressed strings, decoded by
  `kerasmtl.data.vision.coco_masks`; no pycocotools needed). Where objects overlap the **smaller object wins** (the
  one in front, usually: a cup on a table), ties go to the later annotation.
  An annotation with no segmentation marks its box (clipped to the image)
  `-1` (ignored) where no other object is, so it is never taught as
  background; one whose box has no pixel in the image is counted in the
  warning about dropped boxes;
- instance maps (`include_instance_masks=True`): `k` on the pixels of box row
  `k - 1`, with the same overlap rule.

Crowd annotations (`iscrowd=1`, one region over many objects) are painted into
the semantic mask with their class (their pixels are of that class), but with
`skip_crowd=True` they are not detection boxes, since COCO evaluation ignores
them rather than counting them as objects. An image with no annotations is
present, all background, with no boxes. An annotation file with no
`annotations` key (COCO's test `image_info` files) gives missing labels.

Polygons are filled by the pixel-centre rule (a pixel is inside when its
centre is), as pycocotools up to a few boundary pixels. Images are decoded with PIL, grayscale and
CMYK converted to RGB, EXIF orientation ignored (as COCO does).

Folder layouts `is_coco_folder` recognises: `<root>/annotations.json` with
`<root>/images/`; or COCO's own `<root>/annotations/instances_<split>.json`
with the images in `<root>/<split>/`, `<root>/images/<split>/` or
`<root>/images/`.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kerasmtl.boxes import clip_boxes, convert_format
from kerasmtl.data.vision.coco_masks import (  # noqa: F401  (re-exported)
    decode_rle_string,
    polygons_to_mask,
    rle_to_mask,
    segmentation_to_mask,
)
from kerasmtl.data.vision.container import VisionData


def is_coco_folder(path: str | os.PathLike) -> bool:
    """Whether `path` is a folder in one of the COCO layouts `read_coco_folder`
    reads (see the module docstring)."""
    root = Path(path)
    if (root / "annotations.json").is_file() and (root / "images").is_dir():
        return True
    found = (root / "annotations").glob("instances_*.json")
    return any(_image_dir(root, f.stem.removeprefix("instances_")) for f in found)


def _image_dir(root, split):
    for image_dir in (root / split, root / "images" / split, root / "images"):
        if image_dir.is_dir():
            return image_dir
    return None


def find_coco_files(root: str | os.PathLike, split: str | None = None):
    """`(annotation_json, image_dir)` of a COCO folder.

    Args:
        root: the folder.
        split: str or None. For `annotations/instances_<split>.json` layouts,
            which split; `None` is allowed when there is only one. Defaults
            to `None`.
    """
    root = Path(root)
    if (
        split is None
        and (root / "annotations.json").is_file()
        and (root / "images").is_dir()
    ):
        return root / "annotations.json", root / "images"
    found = sorted((root / "annotations").glob("instances_*.json"))
    splits = [f.stem.removeprefix("instances_") for f in found]
    if split is None and len(splits) > 1:
        raise ValueError(
            f"{root} has several annotation files (splits {splits}); pass `split`."
        )
    if split is None and splits:
        split = splits[0]
    if split not in splits:
        raise ValueError(
            f"{root} is not a COCO folder"
            + (f" with split {split!r}" if split else "")
            + ": expected annotations.json and images/, or annotations/instances_"
            "<split>.json and the images in <split>/, images/<split>/ or images/. "
            f"Found splits: {splits}."
        )
    image_dir = _image_dir(root, split)
    if image_dir is not None:
        return root / "annotations" / f"instances_{split}.json", image_dir
    raise ValueError(
        f"{root}: found annotations/instances_{split}.json but no image folder "
        f"{split}/, images/{split}/ or images/."
    )


def read_coco_folder(
    root: str | os.PathLike, split: str | None = None, **kwargs
) -> VisionData:
    """`read_coco` on the files `find_coco_files(root, split)` finds; `kwargs`
    go to `read_coco`."""
    return read_coco(*find_coco_files(root, split), **kwargs)


def read_coco(
    annotation_json: str | os.PathLike,
    image_dir: str | os.PathLike,
    *,
    categories: Sequence[str | int] | None = None,
    include_masks: bool = True,
    include_instance_masks: bool = False,
    skip_crowd: bool = True,
    max_images: int | None = None,
) -> VisionData:
    """Reads a COCO-format annotation file and its images into `VisionData`.

    See the module docstring for the conversion rules. Everything is held in
    memory: for the full COCO use `load_tfds_coco` or `max_images`.

    Args:
        annotation_json: path of the COCO JSON file.
        image_dir: folder the images' `file_name`s are relative to.
        categories: sequence of category names or ids, or None. The classes,
            in class-index order; annotations of other categories are left
            out (counted in `metadata["skipped_annotations"]`; their pixels are
            background). `None` means
            every category, sorted by id. Defaults to `None`.
        include_masks: bool. Rasterise semantic masks; `False` gives missing
            masks (`None`). Defaults to `True`.
        include_instance_masks: bool. Also build instance-id maps. Defaults
            to `False`.
        skip_crowd: bool. Leave crowd annotations out of the boxes (they stay
            in the semantic mask). Defaults to `True`.
        max_images: int or None. Read only the first images, by image id.
            Defaults to `None` (all).

    Returns:
        A `VisionData` with `ids` the images' `file_name`s and `metadata`
        holding `source`, `category_ids`, `image_ids`, `skipped_annotations`
        and `crowd_skipped`.

    Raises:
        ValueError: naming the file and the image or annotation id, for a
            missing image file, an image whose size differs from the JSON, a
            non-integer or unknown image or category id, or a malformed bbox
            or segmentation.
    """
    path = Path(annotation_json)
    try:
        with open(path, encoding="utf-8") as f:
            coco = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(
            f"Cannot read COCO annotation file {str(path)!r}: {err}"
        ) from None
    if not isinstance(coco, dict) or not isinstance(coco.get("images"), list):
        raise ValueError(f"{path}: not a COCO annotation file (no `images` list).")
    for k, category in enumerate(coco.get("categories", [])):
        _check_id(f"{path}: category {k}", category, "id")
    names = {int(c["id"]): str(c["name"]) for c in coco.get("categories", [])}
    keep_ids = _select_categories(path, names, categories)
    index_of = {cid: k for k, cid in enumerate(keep_ids)}
    for k, info in enumerate(coco["images"]):
        _check_id(f"{path}: image {k}", info, "id")
    images = sorted(coco["images"], key=lambda im: int(im["id"]))[:max_images]
    by_image = {int(im["id"]): [] for im in images}
    known_images = {int(im["id"]) for im in coco["images"]}
    has_labels = "annotations" in coco
    skipped = 0
    for ann in coco.get("annotations", []):
        where = f"{path}: annotation id {ann.get('id') if isinstance(ann, dict) else '?'}"
        _check_id(where, ann, "category_id")
        _check_id(where, ann, "image_id")
        if int(ann["category_id"]) not in names:
            raise ValueError(
                f"{where} has category_id {ann.get('category_id')}, not in the "
                f"file's categories (ids {sorted(names)[:20]})."
            )
        if int(ann["image_id"]) not in known_images:
            raise ValueError(
                f"{where} has image_id {ann.get('image_id')}, not in `images`."
            )
        _check_bbox(where, ann.get("bbox"))
        if int(ann["category_id"]) not in index_of:
            skipped += 1
        elif int(ann["image_id"]) in by_image:
            by_image[int(ann["image_id"])].append(ann)

    out = {key: [] for key in ("images", "boxes", "classes", "masks", "instances")}
    dropped, crowd = [], 0
    for info in images:
        image = _read_image(path, Path(image_dir), info)
        out["images"].append(image)
        if not has_labels:
            continue
        anns = by_image[int(info["id"])]
        crowd += sum(bool(a.get("iscrowd", 0)) for a in anns) if skip_crowd else 0
        boxes, classes, rows, empty = _boxes(
            anns, image.shape[:2], skip_crowd, index_of
        )
        masks = (None, None)
        if include_masks or include_instance_masks:
            *masks, outside = _paint(path, anns, rows, index_of, *image.shape[:2])
            # Crowd boxes are not in `empty`; count each annotation once.
            empty += [i for i in outside if i not in empty]
        dropped += empty
        out["boxes"].append(boxes)
        out["classes"].append(classes)
        out["masks"].append(masks[0] if include_masks else None)
        out["instances"].append(masks[1] if include_instance_masks else None)
    if dropped:
        warnings.warn(
            f"{path}: dropped {len(dropped)} box(es) with zero or negative size "
            f"after clipping to the image (annotation ids {dropped[:10]}"
            f"{', ...' if len(dropped) > 10 else ''}).",
            stacklevel=2,
        )
    return VisionData(
        out["images"],
        out["boxes"] or None,
        out["classes"] or None,
        out["masks"] or None,
        class_names=[names[c] for c in keep_ids],
        instance_masks=out["instances"] or None,
        ids=[str(info["file_name"]) for info in images],
        metadata={
            "source": str(path),
            "category_ids": list(keep_ids),
            "image_ids": [int(info["id"]) for info in images],
            "skipped_annotations": skipped,
            "crowd_skipped": crowd,
        },
    )


def _select_categories(path, names, categories):
    if categories is None:
        return sorted(names)
    by_name = {name: cid for cid, name in names.items()}
    ids, unknown = [], []
    for c in categories:
        cid = by_name.get(c) if isinstance(c, str) else c
        if cid in names:
            ids.append(int(cid))
        else:
            unknown.append(c)
    if unknown or not ids or len(set(ids)) != len(ids):
        raise ValueError(
            f"Invalid value for argument `categories`: {unknown or categories} "
            f"(unknown, empty or repeated). {path} has categories "
            f"{[names[i] for i in sorted(names)][:30]}."
        )
    return ids


def _read_image(path, image_dir, info):
    from PIL import Image

    where = f"{path}: image id {info.get('id')}"
    file = image_dir / str(info.get("file_name", ""))
    if not file.is_file():
        raise ValueError(
            f"{where}: image file {str(file)!r} does not exist. Check `image_dir`."
        )
    try:
        with Image.open(file) as im:
            image = np.asarray(im.convert("RGB"))
    except OSError as err:
        raise ValueError(f"{where}: cannot decode {str(file)!r}: {err}") from None
    expected = (info.get("height"), info.get("width"))
    if None not in expected and tuple(int(v) for v in expected) != image.shape[:2]:
        raise ValueError(
            f"{where}: {file.name} is {image.shape[0]}x{image.shape[1]} (HxW) but the "
            f"JSON says height={expected[0]}, width={expected[1]}. Fix the JSON or "
            "the image."
        )
    return image


def _check_id(where, record, field):
    """Refuses an id `int()` would reject or round (`"3"` and `3.0` pass)."""
    if not isinstance(record, dict):
        raise ValueError(
            f"{where} is a {type(record).__name__}; expected a JSON object."
        )
    value = record.get(field)
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        ok = False
    else:
        try:
            ok = float(value) == int(value)
        except (ValueError, OverflowError):
            ok = False
    if not ok:
        found = "is missing" if field not in record else f"is {value!r}"
        raise ValueError(
            f"{where}: `{field}` {found}; expected an integer id. Fix the "
            "annotation file (COCO ids are JSON integers)."
        )


def _check_bbox(where, bbox):
    try:
        ok = len(bbox) == 4 and np.isfinite(np.asarray(bbox, "float64")).all()
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(
            f"{where} has bbox {bbox!r}; expected four finite numbers "
            "[x, y, width, height]."
        )


def _boxes(anns, shape, skip_crowd, index_of):
    """Boxes (xyxy, clipped) with area and their class indices, the rows of
    `anns` they come from, and the annotation ids of the boxes without area."""
    rows = [r for r, a in enumerate(anns) if not (skip_crowd and a.get("iscrowd", 0))]
    xywh = np.asarray([anns[r]["bbox"] for r in rows], "float32").reshape(-1, 4)
    boxes = clip_boxes(convert_format(xywh, "xywh", "xyxy"), *shape)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    classes = [index_of[int(anns[r]["category_id"])] for r in rows]
    return (
        boxes[keep],
        np.asarray(classes, "int32").reshape(-1)[keep],
        [r for r, k in zip(rows, keep) if k],
        [anns[r].get("id") for r, k in zip(rows, keep) if not k],
    )


def _paint(path, anns, box_rows, index_of, height, width):
    """Semantic and instance maps (larger objects first so smaller ones win),
    and the ids of unsegmented annotations whose box has no pixel in the
    image."""
    semantic = np.zeros((height, width), "int32")
    instances = np.zeros((height, width), "int32")
    instance_of = {r: k + 1 for k, r in enumerate(box_rows)}
    painted, outside = [], []
    for r, ann in enumerate(anns):
        where = f"{path}: annotation id {ann.get('id')}"
        mask = segmentation_to_mask(ann.get("segmentation"), height, width, where)
        if mask is None:
            # Unsegmented object: unknown inside its box, not background.
            # Both ends are clipped to the image: a negative end would index
            # from the far side and paint most of the image.
            x, y, w, h = (float(v) for v in ann["bbox"])
            x0, x1 = np.clip([np.floor(x), np.ceil(x + w)], 0, width).astype(int)
            y0, y1 = np.clip([np.floor(y), np.ceil(y + h)], 0, height).astype(int)
            if x1 <= x0 or y1 <= y0:
                outside.append(ann.get("id"))
                continue
            region = semantic[y0:y1, x0:x1]
            region[region == 0] = -1
            continue
        painted.append((-int(mask.sum()), r, mask))
    for _, r, mask in sorted(painted, key=lambda item: item[:2]):
        semantic[mask] = index_of[int(anns[r]["category_id"])] + 1
        instances[mask] = instance_of.get(r, 0)
    return semantic, instances, outside
