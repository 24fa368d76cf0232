"""Images with detection and segmentation labels, held in memory.

`VisionData` is what every vision reader returns (synthetic shapes, DSB-2018
nuclei folders, COCO, VOC). Per image it holds:

- `images[i]`: uint8 `[H, W, 3]`;
- `boxes[i]`: float32 `[N, 4]`, `"xyxy"` in absolute pixels with pixel-edge
  coordinates (a mask whose pixels span columns `c0..c1` inclusive has
  `x_min = c0`, `x_max = c1 + 1`), or `None` when the image has no detection
  label (missing, masked by the loss);
- `classes[i]`: int32 `[N]` in `0..len(class_names) - 1` (or `None` with the
  boxes);
- `masks[i]`: int32 `[H, W]` semantic class map, values in
  `0..len(mask_class_names) - 1` or `-1` (ignored pixel), or `None` (missing);
- `instance_masks[i]` (optional): int32 `[H, W]` instance-id map, `0` where no
  object is and `k` on the pixels of the object of box row `k - 1`. One map per
  image instead of `N` boolean masks: a 1388x1040 image with 375 nuclei takes
  5.8 MB instead of 541 MB (`instance_mask_stack` gives the `[N, H, W]` form).

`vision_dataset` (in `kerasmtl.data.vision.pipeline`)
turns it into batches of `({"image": float32 [B, h, w, 3]
in 0..255}, {detection: {"boxes": float32 [B, M, 4], "classes": int32 [B, M]},
segmentation: int32 [B, h, w]})` with `M = max_boxes`: padding rows have class
`-1` and boxes `0`; a missing detection label has class `-1` and NaN boxes in
every row; a missing mask, and mask padding, is `-1`.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence

import numpy as np

from kerasmtl.data.splits import split_indices


@dataclasses.dataclass(repr=False)
class VisionData:
    """Images with boxes, classes and semantic (and instance) masks.

    Inputs are normalised on construction: grayscale (`[H, W]` or `[H, W, 1]`)
    becomes RGB by repeating the channel and RGBA drops alpha; boxes are
    clipped to their image, and boxes with zero or negative size after
    clipping are dropped with one warning counting them (their instances, if
    any, are removed from the instance map too).

    Args:
        images: list of uint8 arrays `[H, W, 3]` (sizes may differ).
        boxes: list of float32 `[N, 4]` xyxy pixel boxes or `None` (missing
            detection label), or None for all missing. Defaults to `None`.
        classes: list of int32 `[N]` (`None` where `boxes` is `None`), or None.
            Defaults to `None`.
        masks: list of int32 `[H, W]` semantic class maps or `None` (missing),
            or None for all missing. Defaults to `None`.
        class_names: sequence of str. Detection class names; class id `k` is
            `class_names[k]`. Defaults to `()`.
        mask_class_names: sequence of str or None. Names of the mask values;
            `None` means `["background", *class_names]` (the convention of the
            synthetic and nuclei data: mask class = detection class + 1).
            Defaults to `None`.
        instance_masks: list of int32 `[H, W]` instance-id maps or `None`, or
            None. Defaults to `None`.
        ids: sequence of str or None. One id per image, used in messages.
            Defaults to `None` (the indices).
        metadata: dict. Anything the source wants to record. Defaults to `{}`.

    Examples:

    >>> image = np.zeros((4, 6), "uint8")  # grayscale becomes RGB
    >>> data = VisionData([image], [np.array([[1, 1, 3, 5]], "float32")],
    ...                   [np.array([0])], [np.zeros((4, 6), "int32")],
    ...                   class_names=["dot"])
    >>> data.images[0].shape, data.boxes[0].tolist(), data.mask_class_names
    ((4, 6, 3), [[1.0, 1.0, 3.0, 4.0]], ['background', 'dot'])
    >>> data
    VisionData(1 images, 1 boxes, classes=['dot'], missing: 0 detection, 0 masks)
    """

    images: list
    boxes: list | None = None
    classes: list | None = None
    masks: list | None = None
    class_names: Sequence[str] = ()
    mask_class_names: Sequence[str] | None = None
    instance_masks: list | None = None
    ids: Sequence[str] | None = None
    metadata: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        n = len(self.images)
        self.ids = [str(i) for i in (range(n) if self.ids is None else self.ids)]
        self.class_names = [str(c) for c in self.class_names]
        if self.mask_class_names is None:
            self.mask_class_names = ["background", *self.class_names]
        self.mask_class_names = [str(c) for c in self.mask_class_names]
        for field in ("boxes", "classes", "masks", "instance_masks"):
            value = getattr(self, field)
            value = [None] * n if value is None else list(value)
            if len(value) != n:
                raise ValueError(
                    f"VisionData: `{field}` has {len(value)} entries for {n} "
                    "images. Give one per image (None for a missing label)."
                )
            setattr(self, field, value)
        if len(self.ids) != n:
            raise ValueError(
                f"VisionData: `ids` has {len(self.ids)} entries for {n} images. "
                "Give one id per image, or ids=None for the indices."
            )
        self.images = [self._image(i, image) for i, image in enumerate(self.images)]
        self.masks = [self._mask(i, m, "masks") for i, m in enumerate(self.masks)]
        self.instance_masks = [
            self._mask(i, m, "instance_masks") for i, m in enumerate(self.instance_masks)
        ]
        dropped = [self._labels(i) for i in range(n)]
        if sum(dropped):
            first = self.ids[next(i for i, d in enumerate(dropped) if d)]
            warnings.warn(
                f"VisionData: dropped {sum(dropped)} box(es) with zero or negative "
                f"size after clipping to the image, in "
                f"{sum(d > 0 for d in dropped)} image(s) (first: id {first!r}).",
                stacklevel=3,
            )

    def _image(self, i, image):
        image = np.asarray(image)
        if image.dtype != np.uint8:
            raise ValueError(
                f"VisionData: image {self.ids[i]!r} has dtype {image.dtype}; expected "
                "uint8 (0..255). Convert it, e.g. np.clip(x, 0, 255).astype('uint8')."
            )
        if image.ndim == 2:
            image = image[..., None]
        if image.ndim != 3 or image.shape[-1] not in (1, 3, 4) or 0 in image.shape:
            raise ValueError(
                f"VisionData: image {self.ids[i]!r} has shape {image.shape}; expected "
                "[H, W], [H, W, 1], [H, W, 3] or [H, W, 4] with H, W > 0."
            )
        if image.shape[-1] == 1:
            image = np.repeat(image, 3, axis=-1)
        return image[..., :3]

    def _mask(self, i, mask, field):
        if mask is None:
            return None
        mask = np.asarray(mask)
        if mask.ndim == 3 and mask.shape[-1] == 1:
            mask = mask[..., 0]
        if mask.shape != self.images[i].shape[:2]:
            raise ValueError(
                f"VisionData: `{field}` of image {self.ids[i]!r} has shape "
                f"{mask.shape} but the image is {self.images[i].shape[:2]} (H, W). "
                "A mask must have its image's height and width."
            )
        if mask.dtype.kind not in "iu":
            raise ValueError(
                f"VisionData: `{field}` of image {self.ids[i]!r} has dtype "
                f"{mask.dtype}; expected integer class ids."
            )
        mask = mask.astype("int32", copy=False)
        if field == "masks" and mask.size:
            low, high = int(mask.min()), int(mask.max())
            if low < -1 or high >= len(self.mask_class_names):
                raise ValueError(
                    f"VisionData: mask of image {self.ids[i]!r} has values in "
                    f"[{low}, {high}], outside [-1, {len(self.mask_class_names) - 1}] "
                    f"(mask classes {self.mask_class_names}; -1 = ignore)."
                )
        return mask

    def _labels(self, i) -> int:
        """Checks image `i`'s boxes and classes; returns how many were dropped."""
        boxes, classes, name = self.boxes[i], self.classes[i], repr(self.ids[i])
        if boxes is None:
            if classes is not None:
                raise ValueError(
                    f"VisionData: image {name} has classes but boxes=None. A "
                    "missing detection label is boxes=None and classes=None."
                )
            return 0
        boxes = np.asarray(boxes, dtype="float32")
        if boxes.size == 0:
            boxes = boxes.reshape(0, 4)
        classes = np.zeros(0, "int32") if classes is None else np.asarray(classes)
        if boxes.ndim != 2 or boxes.shape[1] != 4 or classes.shape != (len(boxes),):
            raise ValueError(
                f"VisionData: image {name} has boxes {boxes.shape} and classes "
                f"{classes.shape}; expected [N, 4] and [N]."
            )
        if not np.isfinite(boxes).all():
            raise ValueError(
                f"VisionData: image {name} has non-finite box coordinates. For a "
                "missing detection label pass boxes=None."
            )
        if classes.size and (classes.min() < 0 or classes.max() >= len(self.class_names)):
            raise ValueError(
                f"VisionData: image {name} has classes in [{classes.min()}, "
                f"{classes.max()}], outside [0, {len(self.class_names) - 1}] "
                f"(class_names {self.class_names})."
            )
        height, width = self.images[i].shape[:2]
        # np.clip rather than kerasmtl.boxes.clip_boxes: same result, without
        # its tensor dispatch, which costs more than the clip on small arrays.
        boxes = np.clip(boxes, 0.0, np.array([width, height, width, height], "float32"))
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        self.boxes[i], self.classes[i] = boxes[keep], classes[keep].astype("int32")
        instances = self.instance_masks[i]
        if instances is not None:
            if instances.max(initial=0) > len(boxes):
                raise ValueError(
                    f"VisionData: the instance map of image {name} has id "
                    f"{instances.max()} but the image has {len(boxes)} boxes; "
                    "instance k belongs to box row k - 1."
                )
            if not keep.all():
                # Renumber so that instance k still belongs to box row k - 1.
                new_id = np.zeros(len(boxes) + 1, "int32")
                new_id[1:][keep] = np.arange(1, keep.sum() + 1)
                self.instance_masks[i] = new_id[instances]
        return int((~keep).sum())

    # -- views ------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        return (
            f"VisionData({len(self)} images, {self.num_boxes} boxes, "
            f"classes={self.class_names}, missing: "
            f"{sum(b is None for b in self.boxes)} detection, "
            f"{sum(m is None for m in self.masks)} masks)"
        )

    @property
    def num_classes(self) -> int:
        """Number of detection classes."""
        return len(self.class_names)

    @property
    def num_mask_classes(self) -> int:
        """Number of semantic mask classes (background included)."""
        return len(self.mask_class_names)

    @property
    def num_boxes(self) -> int:
        return sum(len(b) for b in self.boxes if b is not None)

    def instance_mask_stack(self, index: int) -> np.ndarray | None:
        """bool `[N, H, W]`: one mask per box of image `index` (None without an
        instance map)."""
        instances = self.instance_masks[index]
        if instances is None:
            return None
        count = 0 if self.boxes[index] is None else len(self.boxes[index])
        return instances[None] == np.arange(1, count + 1)[:, None, None]

    def stats(self) -> dict:
        """Counts: images, boxes per class, missing labels, image sizes."""
        classes = np.concatenate(
            [c for c in self.classes if c is not None] or [np.zeros(0, "int32")]
        )
        sizes = {}
        for image in self.images:
            sizes[image.shape[:2]] = sizes.get(image.shape[:2], 0) + 1
        return {
            "images": len(self),
            "boxes": int(len(classes)),
            "boxes_per_class": {
                name: int((classes == k).sum()) for k, name in enumerate(self.class_names)
            },
            "max_boxes_per_image": max(
                (len(b) for b in self.boxes if b is not None), default=0
            ),
            "missing_detection": sum(b is None for b in self.boxes),
            "missing_masks": sum(m is None for m in self.masks),
            "image_sizes": dict(sorted(sizes.items(), key=lambda kv: -kv[1])),
        }

    # -- new data sets ------------------------------------------------------------

    def select(self, indices) -> VisionData:
        """The images at `indices` (ints, in that order), as a new object."""
        indices = [int(i) for i in indices]
        pick = lambda values: [values[i] for i in indices]  # noqa: E731
        return VisionData(
            pick(self.images), pick(self.boxes), pick(self.classes), pick(self.masks),
            self.class_names, self.mask_class_names, pick(self.instance_masks),
            pick(self.ids), dict(self.metadata),
        )

    def split(self, fraction: float, seed: int = 0) -> tuple[VisionData, VisionData]:
        """Reproducible random split, e.g. `train, dev = data.split(0.2)`.

        Args:
            fraction: float in (0, 1). Share of images in the second part
                (rounded, at least one image in each part).
            seed: int. The same seed and data give the same split. Defaults
                to `0`.

        Returns:
            `(rest, held_out)`, both in the original order.
        """
        rest, held_out = split_indices(len(self), fraction, seed, "image")
        return self.select(rest), self.select(held_out)
