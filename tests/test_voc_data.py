"""PASCAL VOC reader on a tiny VOC folder (XML + JPEG + palette PNGs) written
in tmp_path."""

import numpy as np
import pytest
from PIL import Image

from kerasmtl.data.tabular.tfds import VOC_LABELS
from kerasmtl.data.vision.voc import read_voc, voc_palette

SIZES = {"2007_000001": (32, 48), "2007_000002": (40, 32), "2007_000003": (32, 32)}


def xml_text(height, width, objects):
    parts = [
        f"<annotation><size><width>{width}</width><height>{height}</height>"
        "<depth>3</depth></size>"
    ]
    for name, box, difficult in objects:
        coords = "".join(
            f"<{t}>{v}</{t}>" for t, v in zip(("xmin", "ymin", "xmax", "ymax"), box)
        )
        parts.append(
            f"<object><name>{name}</name><pose>Left</pose>"
            f"<difficult>{difficult}</difficult><bndbox>{coords}</bndbox>"
            "<part><name>head</name><bndbox><xmin>1</xmin></bndbox></part>"
            "</object>"
        )
    return "".join(parts) + "</annotation>"


def palette_png(path, indices):
    image = Image.fromarray(indices.astype("uint8"), mode="P")
    image.putpalette(voc_palette().ravel().tolist())
    image.save(path)


def make_voc(root):
    for sub in (
        "JPEGImages",
        "Annotations",
        "SegmentationClass",
        "ImageSets/Main",
        "ImageSets/Segmentation",
    ):
        (root / sub).mkdir(parents=True)
    for image_id, (height, width) in SIZES.items():
        Image.fromarray(np.full((height, width, 3), 90, "uint8")).save(
            root / "JPEGImages" / f"{image_id}.jpg"
        )
    (root / "Annotations" / "2007_000001.xml").write_text(
        xml_text(
            32,
            48,
            [
                ("dog", (3, 5, 20, 30), 0),
                ("Person", (10, 1, 60, 32), 1),  # past the right edge: clipped
            ],
        )
    )
    (root / "Annotations" / "2007_000002.xml").write_text(xml_text(40, 32, []))
    # Image 1: background, a dog (12), a void boundary (255).
    mask = np.zeros((32, 48), "uint8")
    mask[4:30, 2:20] = 12
    mask[4, 2:20] = 255
    palette_png(root / "SegmentationClass" / "2007_000001.png", mask)
    # Image 3: an RGB mask with a cat (8).
    rgb = np.zeros((32, 32, 3), "uint8")
    rgb[0:5, 0:5] = voc_palette()[8]
    Image.fromarray(rgb).save(root / "SegmentationClass" / "2007_000003.png")
    (root / "ImageSets/Segmentation/train.txt").write_text("2007_000001\n2007_000003\n")
    (root / "ImageSets/Main/train.txt").write_text("2007_000001  1\n2007_000002 -1\n\n")
    return root


def test_read_voc_segmentation_split(tmp_path):
    data = read_voc(make_voc(tmp_path / "VOC2007"))
    assert data.ids == ["2007_000001", "2007_000003"]
    assert data.class_names == list(VOC_LABELS)
    assert data.mask_class_names == ["background", *VOC_LABELS]
    # 1-based inclusive VOC boxes -> pixel edges; the person is clipped.
    np.testing.assert_array_equal(data.boxes[0], [[2, 4, 20, 30], [9, 0, 48, 32]])
    np.testing.assert_array_equal(data.classes[0], [11, 14])
    assert data.metadata["difficult"]["2007_000001"].tolist() == [False, True]
    assert data.metadata["difficult"]["2007_000003"] is None  # no XML
    expected = np.zeros((32, 48), "int32")
    expected[4:30, 2:20] = 12
    expected[4, 2:20] = -1
    np.testing.assert_array_equal(data.masks[0], expected)
    # No XML: a missing detection label; the RGB mask maps back to indices.
    assert data.boxes[1] is None and data.classes[1] is None
    expected = np.zeros((32, 32), "int32")
    expected[0:5, 0:5] = 8
    np.testing.assert_array_equal(data.masks[1], expected)
    assert data.images[0].shape == (32, 48, 3) and data.images[0].dtype == np.uint8


def test_read_voc_main_split_drop_difficult_and_all_images(tmp_path):
    root = make_voc(tmp_path)
    data = read_voc(root, image_set="Main", difficult="drop")
    assert data.ids == ["2007_000001", "2007_000002"]
    np.testing.assert_array_equal(data.classes[0], [11])
    assert data.metadata["dropped_difficult"] == 1
    assert data.boxes[1].shape == (0, 4)  # no objects: all background
    assert data.masks[1] is None  # no PNG: missing mask
    every = read_voc(root, split=None, include_masks=False)
    assert every.ids == sorted(SIZES) and every.masks == [None] * 3
    (tmp_path / "mine.txt").write_text("2007_000003\n")
    assert read_voc(root, image_set_file=tmp_path / "mine.txt").ids == ["2007_000003"]
    assert len(read_voc(root, split=None, max_images=1)) == 1


def test_degenerate_boxes_are_dropped_with_a_warning(tmp_path):
    root = make_voc(tmp_path)
    (root / "Annotations" / "2007_000002.xml").write_text(
        xml_text(40, 32, [("cat", (40, 5, 50, 9), 0), ("cat", (1, 1, 2, 2), 0)])
    )
    with pytest.warns(UserWarning, match=r"dropped 1 box\(es\).*\['2007_000002'\]"):
        data = read_voc(root, image_set="Main")
    np.testing.assert_array_equal(data.boxes[1], [[0, 0, 2, 2]])
    assert data.metadata["difficult"]["2007_000002"].tolist() == [False]


def test_read_voc_errors(tmp_path):
    root = make_voc(tmp_path)
    annotations, masks = root / "Annotations", root / "SegmentationClass"
    with pytest.raises(ValueError, match="Expected 'keep' or 'drop'"):
        read_voc(root, difficult="ignore")
    with pytest.raises(ValueError, match="is not a VOC folder: it has no JPEGImages"):
        read_voc(tmp_path / "nothing")
    with pytest.raises(
        ValueError, match=r"val.txt' does not exist \(found: \['train'\]"
    ):
        read_voc(root, split="val")
    with pytest.raises(ValueError, match="Expected 'Main' or 'Segmentation'"):
        read_voc(root, image_set="Action")
    (root / "ImageSets/Main/train.txt").write_text("2007_000009\n")
    with pytest.raises(
        ValueError, match=r"VOC image .*2007_000009.jpg' does not exist"
    ):
        read_voc(root, image_set="Main")

    (annotations / "2007_000001.xml").write_text(
        xml_text(32, 48, [("unicorn", (1, 1, 2, 2), 0)])
    )
    with pytest.raises(ValueError, match=r"000001.xml: object 0 has class 'unicorn'"):
        read_voc(root)
    (annotations / "2007_000001.xml").write_text(xml_text(32, 40, []))
    with pytest.raises(
        ValueError, match=r"000001.xml: size 32x40 \(HxW\) differs .* 32x48"
    ):
        read_voc(root)
    (annotations / "2007_000001.xml").write_text("<annotation><size>")
    with pytest.raises(ValueError, match=r"000001.xml: not a VOC annotation"):
        read_voc(root)
    (annotations / "2007_000001.xml").unlink()

    palette_png(masks / "2007_000001.png", np.full((32, 47), 0))
    with pytest.raises(
        ValueError, match=r"000001.png is 32x47 \(HxW\) but its image is 32x48"
    ):
        read_voc(root)
    palette_png(masks / "2007_000001.png", np.full((32, 48), 21))
    with pytest.raises(ValueError, match=r"000001.png has values \[21\]; expected 0"):
        read_voc(root)
    Image.fromarray(np.full((32, 48, 3), 7, "uint8")).save(masks / "2007_000001.png")
    with pytest.raises(ValueError, match=r"colours \[\[7, 7, 7\]\] not in the VOC"):
        read_voc(root)
