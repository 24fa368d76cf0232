"""Images with detection and segmentation labels.

- `container`: `VisionData`, what every reader returns;
- readers: `coco` (with `coco_masks`), `voc`, `nuclei` (instance-mask
  folders such as DSB-2018);
- `synthetic`: `synthetic_shapes`, textured images of shapes;
- `shape_presence`: `synthetic_shape_images`, multi-label images (which
  shapes an image shows);
- `augment`: `VisionAugment`, random augmentation as graph ops;
- `pipeline`: `vision_dataset`, the `tf.data` pipeline of a `VisionData`;
- `tfds`: tensorflow-datasets loaders (they import tfds when called; not
  imported here).

Image sizes fed to a model are multiples of
`kerasmtl.layers.backbones.SIZE_MULTIPLE` (32), the backbone's coarsest stride.
"""

from kerasmtl.data.vision.augment import VisionAugment
from kerasmtl.data.vision.coco import is_coco_folder, read_coco, read_coco_folder
from kerasmtl.data.vision.container import VisionData
from kerasmtl.data.vision.nuclei import (
    is_instance_mask_folder,
    read_instance_mask_folder,
)
from kerasmtl.data.vision.pipeline import vision_dataset
from kerasmtl.data.vision.shape_presence import synthetic_shape_images
from kerasmtl.data.vision.synthetic import synthetic_shapes
from kerasmtl.data.vision.voc import read_voc

__all__ = [
    "VisionAugment",
    "VisionData",
    "is_coco_folder",
    "is_instance_mask_folder",
    "read_coco",
    "read_coco_folder",
    "read_instance_mask_folder",
    "read_voc",
    "synthetic_shape_images",
    "synthetic_shapes",
    "vision_dataset",
]
