"""COCO-format reader: RLE and polygon decoding against pycocotools, and
`read_coco` on tiny JSON + PNG files written in tmp_path."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask
from scipy import ndimage

from kerasmtl.data.vision.coco import (
    decode_rle_string,
    find_coco_files,
    is_coco_folder,
    polygons_to_mask,
    read_coco,
    read_coco_folder,
    rle_to_mask,
)


def runs(mask):
    """Uncompressed COCO RLE counts of a bool mask (column-major, 0s first)."""
    flat = np.asarray(mask, bool).T.ravel()
    edges = np.flatnonzero(np.diff(flat.astype(int))) + 1
    counts = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    return [0, *counts] if flat[0] else counts


def test_rle_decoding_matches_pycocotools():
    rng = np.random.default_rng(0)
    for trial in range(20):
        height, width = rng.integers(1, 30, size=2)
        # Blobs with long runs (large counts need several 5-bit groups) and
        # isolated pixels (negative differences).
        mask = rng.random((height, width)) < rng.choice([0.05, 0.5, 0.95])
        mask[: rng.integers(0, height + 1)] ^= trial % 2 == 0
        encoded = coco_mask.encode(np.asfortranarray(mask.astype("uint8")))
        counts = decode_rle_string(encoded["counts"])
        assert counts == runs(mask)
        size = [int(height), int(width)]
        np.testing.assert_array_equal(rle_to_mask(encoded, height, width), mask)
        as_str = {"size": size, "counts": encoded["counts"].decode()}
        np.testing.assert_array_equal(rle_to_mask(as_str, height, width), mask)
        raw = {"size": size, "counts": runs(mask)}
        reference = coco_mask.decode(coco_mask.frPyObjects(raw, height, width))
        np.testing.assert_array_equal(rle_to_mask(raw, height, width), reference)


def test_rle_errors():
    with pytest.raises(ValueError, match=r"sum to height \* width = 6; they sum to 5"):
        rle_to_mask({"size": [2, 3], "counts": [2, 3]}, 2, 3)
    with pytest.raises(ValueError, match=r"ann 7: RLE size \[3, 2\] differs"):
        rle_to_mask({"size": [3, 2], "counts": [6]}, 2, 3, where="ann 7")
    with pytest.raises(ValueError, match="ends inside a count"):
        decode_rle_string("0h")  # 'h' = 56 has the "more" bit


def test_polygons_match_pycocotools_up_to_boundary_pixels():
    height, width = 40, 50
    square = [[0, 0, 10, 0, 10, 10, 0, 10]]
    expected = coco_mask.decode(coco_mask.frPyObjects(square, height, width))[..., 0]
    np.testing.assert_array_equal(polygons_to_mask(square, height, width), expected)
    rng = np.random.default_rng(1)
    for _ in range(30):
        n = rng.integers(3, 9)
        centre, radius = rng.uniform(8, 32, 2), rng.uniform(4, 10)
        angle = np.sort(rng.uniform(0, 2 * np.pi, n))
        poly = (
            np.stack(
                [
                    centre[0] + 1.3 * radius * np.cos(angle),
                    centre[1] + radius * np.sin(angle),
                ],
                1,
            )
            .ravel()
            .tolist()
        )
        # Two polygons of one object: their union.
        polys = [poly, [1.5, 30.2, 7.9, 31, 4, 38.6]]
        reference = coco_mask.decode(coco_mask.frPyObjects(polys, height, width))
        reference = reference.any(-1)
        ours = polygons_to_mask(polys, height, width)
        # pycocotools snaps vertices to a 1/5 pixel grid: pixels may differ only
        # on the reference's boundary.
        boundary = ndimage.binary_dilation(reference) & ~ndimage.binary_erosion(
            reference
        )
        assert not ((ours ^ reference) & ~boundary).any()
        assert (ours & reference).sum() / (ours | reference).sum() > 0.9


def test_malformed_polygons():
    for bad in ([1, 2, 3], [[0, 0], "x"], [float("nan")] * 6):
        polys = [bad] if not isinstance(bad[0], list) else bad
        with pytest.raises(ValueError, match=r"ann 3: polygon \d is malformed"):
            polygons_to_mask(polys, 5, 5, where="ann 3")


# -- read_coco on files ------------------------------------------------------

CATEGORIES = [
    {"id": 7, "name": "dog"},
    {"id": 3, "name": "cat"},
    {"id": 5, "name": "cow"},
]


def write_image(path, height, width, value=0, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.full((height, width, 3), value, "uint8")
    Image.fromarray(array).convert(mode).save(path)


def write_coco(tmp_path, annotations, images=None, name="annotations.json", **extra):
    images = images or [
        {"id": 1, "file_name": "a.png", "height": 32, "width": 48},
        {"id": 2, "file_name": "sub/b.jpg", "height": 40, "width": 32},
        {"id": 3, "file_name": "c.png", "height": 32, "width": 32},
    ]
    for im in images:
        file = tmp_path / "images" / im["file_name"]
        if not file.exists():
            write_image(
                file,
                im["height"],
                im["width"],
                value=100,
                mode="L" if im["id"] == 3 else "RGB",
            )
    coco = {"images": images, "categories": CATEGORIES, **extra}
    if annotations is not None:
        coco["annotations"] = annotations
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(coco))
    return path


def ann(id, image_id, category_id, bbox, segmentation=None, iscrowd=0):
    return {
        "id": id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": bbox,
        "segmentation": [] if segmentation is None else segmentation,
        "iscrowd": iscrowd,
    }


def test_read_coco_boxes_classes_and_masks(tmp_path):
    crowd = np.zeros((40, 32), bool)
    crowd[30:40, 0:8] = True
    small = np.zeros((32, 48), bool)
    small[6:10, 12:16] = True
    annotations = [
        # A 20x10 cat (polygon), a 4x4 dog on top of it (compressed RLE).
        ann(10, 1, 3, [10, 4, 20, 10], [[10, 4, 30, 4, 30, 14, 10, 14]]),
        ann(
            11,
            1,
            7,
            [12, 6, 4, 4],
            {
                k: v.decode() if k == "counts" else v
                for k, v in coco_mask.encode(
                    np.asfortranarray(small.astype("uint8"))
                ).items()
            },
        ),
        # Image 2: a box past the right edge (clipped), a crowd of cats
        # (uncompressed RLE), a dog without segmentation.
        ann(20, 2, 7, [20, 0, 30, 5], [[20, 0, 32, 0, 32, 5, 20, 5]]),
        ann(21, 2, 3, [0, 30, 8, 10], {"size": [40, 32], "counts": runs(crowd)}, 1),
        ann(22, 2, 7, [2, 2, 3, 3]),
        # A cow, not among the categories asked for.
        ann(23, 2, 5, [0, 0, 1, 1]),
    ]
    path = write_coco(tmp_path, annotations)
    data = read_coco(
        path,
        tmp_path / "images",
        categories=["cat", "dog"],
        include_instance_masks=True,
    )
    assert data.class_names == ["cat", "dog"]
    assert data.mask_class_names == ["background", "cat", "dog"]
    assert data.ids == ["a.png", "sub/b.jpg", "c.png"]
    assert data.metadata["category_ids"] == [3, 7]
    assert data.metadata["image_ids"] == [1, 2, 3]
    assert data.metadata["skipped_annotations"] == 1
    assert data.metadata["crowd_skipped"] == 1
    np.testing.assert_array_equal(data.boxes[0], [[10, 4, 30, 14], [12, 6, 16, 10]])
    np.testing.assert_array_equal(data.classes[0], [0, 1])
    np.testing.assert_array_equal(data.boxes[1], [[20, 0, 32, 5], [2, 2, 5, 5]])
    np.testing.assert_array_equal(data.classes[1], [1, 1])
    assert data.boxes[2].shape == (0, 4) and data.classes[2].shape == (0,)

    expected = np.zeros((32, 48), "int32")
    expected[4:14, 10:30] = 1
    expected[6:10, 12:16] = 2  # the smaller dog wins over the cat
    np.testing.assert_array_equal(data.masks[0], expected)
    instances = np.zeros((32, 48), "int32")
    instances[4:14, 10:30] = 1
    instances[6:10, 12:16] = 2
    np.testing.assert_array_equal(data.instance_masks[0], instances)

    expected = np.zeros((40, 32), "int32")
    expected[0:5, 20:32] = 2
    expected[crowd] = 1  # crowd pixels keep their class
    expected[2:5, 2:5] = -1  # unsegmented dog: unknown, not background
    np.testing.assert_array_equal(data.masks[1], expected)
    assert set(np.unique(data.instance_masks[1])) == {0, 1}  # crowd: no instance

    np.testing.assert_array_equal(data.masks[2], 0)  # no annotations: background
    assert data.images[2].shape == (32, 32, 3)  # grayscale file -> RGB
    assert data.images[0].dtype == np.uint8 and (data.images[0] == 100).all()


def test_read_coco_defaults_crowd_and_degenerate_boxes(tmp_path):
    annotations = [
        ann(1, 1, 7, [40, 10, 20, 5], [[40, 10, 48, 10, 48, 15]]),
        ann(2, 1, 3, [60, 10, 5, 5]),  # entirely right of the 48-wide image
        ann(3, 1, 3, [5, 5, 0, 9]),  # zero width
        ann(4, 3, 5, [1, 2, 3, 4], iscrowd=1),
    ]
    path = write_coco(tmp_path, annotations)
    with pytest.warns(
        UserWarning, match=r"dropped 2 box\(es\).*annotation ids \[2, 3\]"
    ):
        data = read_coco(
            path,
            tmp_path / "images",
            skip_crowd=False,
            include_masks=False,
            max_images=2,
        )
    assert len(data) == 2 and data.masks == [None, None]
    # All categories, sorted by id: cat (3), cow (5), dog (7).
    assert data.class_names == ["cat", "cow", "dog"]
    np.testing.assert_array_equal(data.boxes[0], [[40, 10, 48, 15]])
    np.testing.assert_array_equal(data.classes[0], [2])
    data = read_coco(path, tmp_path / "images", categories=[5], skip_crowd=False)
    np.testing.assert_array_equal(data.boxes[2], [[1, 2, 4, 6]])  # crowd kept


def test_annotation_file_without_annotations_gives_missing_labels(tmp_path):
    path = write_coco(tmp_path, None)
    data = read_coco(path, tmp_path / "images")
    assert data.boxes == [None] * 3 and data.masks == [None] * 3


def test_read_coco_errors(tmp_path):
    images = tmp_path / "images"
    good = ann(1, 1, 3, [0, 0, 2, 2], [[0, 0, 2, 0, 2, 2]])
    cases = [
        ([{**good, "category_id": 99}], r"annotation id 1 has category_id 99, not in"),
        ([{**good, "image_id": 42}], r"annotation id 1 has image_id 42"),
        ([{**good, "bbox": [0, 0, 2]}], r"annotation id 1 has bbox \[0, 0, 2\]"),
        (
            [{**good, "segmentation": [[0, 0, 1]]}],
            r"annotation id 1: polygon 0 is malformed",
        ),
        (
            [{**good, "segmentation": {"size": [5, 5], "counts": [25]}}],
            r"annotation id 1: RLE size \[5, 5\] differs from the image size \[32, 48\]",
        ),
        ([{**good, "segmentation": 3}], r"annotation id 1: `segmentation` is a int"),
    ]
    for annotations, message in cases:
        with pytest.raises(ValueError, match=message):
            read_coco(write_coco(tmp_path, annotations), images)
    with pytest.raises(ValueError, match=r"`categories`: \['bird'\].*\['cat', 'cow'"):
        read_coco(write_coco(tmp_path, []), images, categories=["cat", "bird"])
    wrong_size = [{"id": 1, "file_name": "a.png", "height": 30, "width": 48}]
    with pytest.raises(ValueError, match=r"image id 1: a.png is 32x48 .* height=30"):
        read_coco(write_coco(tmp_path, [], images=wrong_size), images)
    missing = [{"id": 5, "file_name": "nope.png", "height": 3, "width": 3}]
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"images": missing, "categories": CATEGORIES}))
    with pytest.raises(
        ValueError, match=r"image id 5: image file .*nope.png.* does not"
    ):
        read_coco(path, images)
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"Cannot read COCO annotation file .*m.json"):
        read_coco(path, images)


def test_coco_folder_layouts(tmp_path):
    simple = tmp_path / "simple"
    write_coco(simple, [])
    assert is_coco_folder(simple)
    assert find_coco_files(simple) == (simple / "annotations.json", simple / "images")

    official = tmp_path / "official"
    image = [{"id": 1, "file_name": "x.png", "height": 32, "width": 32}]
    for split in ("train2017", "val2017"):
        write_image(official / split / "x.png", 32, 32)
        write_coco(
            official, [], images=image, name=f"annotations/instances_{split}.json"
        )
    assert is_coco_folder(official)
    with pytest.raises(ValueError, match=r"several annotation files.*'train2017'"):
        find_coco_files(official)
    assert find_coco_files(official, "val2017") == (
        official / "annotations" / "instances_val2017.json",
        official / "val2017",
    )
    assert len(read_coco_folder(official, "train2017")) == 1

    no_images = tmp_path / "no_images"
    write_coco(no_images, [], name="annotations/instances_x.json")
    shutil.rmtree(no_images / "images")
    assert not is_coco_folder(no_images) and not is_coco_folder(tmp_path)
    with pytest.raises(ValueError, match=r"instances_x.json but no image folder x/"):
        find_coco_files(no_images)
    with pytest.raises(ValueError, match=r"not a COCO folder with split 'test'"):
        find_coco_files(official, "test")


def test_unsegmented_boxes_are_clipped_before_painting(tmp_path):
    annotations = [
        # 3x3 boxes with no segmentation: one entirely above-left of the image
        # (its far ends are negative), one overlapping the top-left corner, one
        # with negative width whose start is inside the image.
        ann(1, 1, 3, [-5, -5, 3, 3]),
        ann(2, 1, 3, [-1, -2, 3, 3]),
        ann(3, 1, 7, [40, 20, -50, 5]),
        # A crowd without segmentation, entirely below the image.
        ann(4, 1, 7, [5, 40, 4, 4], iscrowd=1),
    ]
    path = write_coco(tmp_path, annotations, images=[
        {"id": 1, "file_name": "a.png", "height": 32, "width": 48}
    ])
    with pytest.warns(
        UserWarning, match=r"dropped 3 box\(es\).*annotation ids \[1, 3, 4\]"
    ):
        data = read_coco(path, tmp_path / "images")
    expected = np.zeros((32, 48), "int32")
    expected[0:1, 0:2] = -1  # only the part of box 2 inside the image
    np.testing.assert_array_equal(data.masks[0], expected)
    np.testing.assert_array_equal(data.boxes[0], [[0, 0, 2, 1]])


def test_non_integer_ids_name_the_file_annotation_and_field(tmp_path):
    images = tmp_path / "images"
    good = ann(8, 1, 3, [0, 0, 2, 2], [[0, 0, 2, 0, 2, 2]])
    cases = [
        ({**good, "category_id": "cat"}, r"annotation id 8: `category_id` is 'cat'"),
        ({**good, "category_id": 3.5}, r"annotation id 8: `category_id` is 3.5"),
        ({**good, "image_id": None}, r"annotation id 8: `image_id` is None"),
        ({k: v for k, v in good.items() if k != "image_id"},
         r"annotation id 8: `image_id` is missing"),
    ]
    for annotation, message in cases:
        path = write_coco(tmp_path, [annotation])
        with pytest.raises(ValueError, match=rf"m?annotations\.json: {message}"):
            read_coco(path, images)
    path = write_coco(tmp_path, [], images=[
        {"id": "first", "file_name": "a.png", "height": 32, "width": 48}
    ])
    with pytest.raises(ValueError, match=r"annotations\.json: image 0: `id` is 'first'"):
        read_coco(path, images)
    # Ids that int() converts exactly still read.
    path = write_coco(tmp_path, [{**good, "category_id": "3", "image_id": 1.0}])
    data = read_coco(path, images, categories=["cat"])
    np.testing.assert_array_equal(data.classes[0], [0])
