import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kerasmtl.data.vision.nuclei import (
    is_instance_mask_folder,
    read_instance_mask_folder,
)
from kerasmtl.data.vision.pipeline import vision_dataset

DSB = Path("/work/shared/data/dsb2018_nuclei")


def _mask(height, width, rows, cols):
    mask = np.zeros((height, width), "uint8")
    mask[rows[0] : rows[1], cols[0] : cols[1]] = 255
    return mask


def _write(root, image_id, image, masks):
    folder = root / image_id
    (folder / "images").mkdir(parents=True)
    Image.fromarray(image).save(folder / "images" / f"{image_id}.png")
    (folder / "masks").mkdir()
    for name, mask in masks.items():
        Image.fromarray(mask).save(folder / "masks" / f"{name}.png")
    return folder


def _make_folder(root):
    """Two images: an RGBA 6x8 one with two nuclei that overlap on one pixel,
    and a 16-bit grayscale 4x4 one with one nucleus."""
    rgba = np.zeros((6, 8, 4), "uint8")
    rgba[..., 0], rgba[..., 3] = 7, 255
    _write(root, "aa", rgba, {
        "m1": _mask(6, 8, (1, 3), (1, 4)),   # rows 1-2, cols 1-3
        "m2": _mask(6, 8, (2, 6), (3, 8)),   # rows 2-5, cols 3-7; (2, 3) shared
    })
    gray16 = np.full((4, 4), 0x1234, "uint16")
    _write(root, "bb", gray16, {"n": _mask(4, 4, (0, 1), (2, 3))})
    return root


@pytest.fixture
def folder(tmp_path):
    return _make_folder(tmp_path / "stage1_train")


def test_reads_boxes_masks_and_instances(folder):
    data = read_instance_mask_folder(folder)
    assert data.ids == ["aa", "bb"] and data.class_names == ["nucleus"]
    assert data.mask_class_names == ["background", "nucleus"]
    # Pixel-edge boxes: last row/column + 1.
    assert data.boxes[0].tolist() == [[1, 1, 4, 3], [3, 2, 8, 6]]
    assert data.boxes[1].tolist() == [[2, 0, 3, 1]]
    assert data.classes[0].tolist() == [0, 0]
    assert data.images[0].shape == (6, 8, 3) and (data.images[0][..., 0] == 7).all()
    # 16-bit gray keeps its high byte: 0x1234 -> 0x12, on all three channels.
    assert (data.images[1] == 0x12).all()
    semantic, instances = data.masks[0], data.instance_masks[0]
    assert semantic.sum() == 6 + 20 - 1 and semantic.max() == 1
    assert instances[2, 3] == 2  # the later mask wins the shared pixel
    assert (instances == 1).sum() == 5 and (instances == 2).sum() == 20
    assert data.metadata["mask_ids"] == [["m1", "m2"], ["n"]]
    # The data feeds the pipeline.
    x, y = next(iter(vision_dataset(data, batch_size=2, max_boxes=2)))
    assert x["image"].shape == (2, 32, 32, 3)
    assert y["detection"]["classes"].numpy().tolist() == [[0, 0], [0, -1]]


def test_recognises_the_layout(folder, tmp_path):
    assert is_instance_mask_folder(folder)
    assert is_instance_mask_folder(tmp_path)  # its single subfolder has it
    assert read_instance_mask_folder(tmp_path).ids == ["aa", "bb"]
    (folder / "notes.txt").write_text("plain files at the root are ignored")
    assert is_instance_mask_folder(folder)
    assert not is_instance_mask_folder(folder / "aa")
    assert not is_instance_mask_folder(tmp_path / "missing")
    (folder / "stray").mkdir()
    assert not is_instance_mask_folder(folder)
    with pytest.raises(ValueError, match="not an instance-mask folder"):
        read_instance_mask_folder(folder)


def test_image_ids_and_unlabelled_folders(folder):
    assert read_instance_mask_folder(folder, image_ids=["bb"]).ids == ["bb"]
    with pytest.raises(ValueError, match=r"no image folder\(s\) \['zz'\]"):
        read_instance_mask_folder(folder, image_ids=["zz"])
    for path in (folder / "bb" / "masks").iterdir():
        path.unlink()
    (folder / "bb" / "masks").rmdir()
    with pytest.raises(ValueError, match=r"bb: no masks/ folder.*allow_unlabelled"):
        read_instance_mask_folder(folder)
    data = read_instance_mask_folder(folder, allow_unlabelled=True)
    assert data.boxes[1] is None and data.masks[1] is None


def test_empty_mask_is_skipped_with_a_counted_warning(folder):
    Image.fromarray(np.zeros((6, 8), "uint8")).save(folder / "aa" / "masks" / "m0.png")
    with pytest.warns(UserWarning, match=r"skipped 1 empty mask file\(s\).*m0.png"):
        data = read_instance_mask_folder(folder)
    assert len(data.boxes[0]) == 2 and data.metadata["mask_ids"][0] == ["m1", "m2"]
    assert data.metadata["empty_masks"] == [str(folder / "aa" / "masks" / "m0.png")]


def _break_size(folder):
    Image.fromarray(_mask(5, 8, (0, 1), (0, 1))).save(folder / "aa/masks/m3.png")
    return r"m3.png: the mask is 5x8 \(HxW\) but its image aa.png is 6x8"


def _break_text(folder):
    (folder / "aa/masks/readme.txt").write_text("hi")
    return r"readme.txt: not a PNG file"


def _break_empty_file(folder):
    (folder / "aa/masks/m3.png").write_bytes(b"")
    return r"m3.png: empty file \(0 bytes\)"


def _break_jpeg(folder):
    Image.fromarray(np.zeros((6, 8), "uint8")).save(folder / "aa/masks/m3.png",
                                                    format="JPEG")
    return r"m3.png: not a PNG file \(it starts with b'\\xff\\xd8"


def _break_corrupt(folder):
    (folder / "aa/images/aa.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 10)
    return r"aa.png: cannot decode the PNG"


def _break_extra_image(folder):
    Image.fromarray(np.zeros((6, 8), "uint8")).save(folder / "aa/images/other.png")
    return r"holds \['other.png'\] besides aa.png"


def test_bad_files_name_the_file(tmp_path):
    for break_it in (_break_size, _break_text, _break_empty_file, _break_jpeg,
                     _break_corrupt, _break_extra_image):
        folder = _make_folder(tmp_path / break_it.__name__)
        message = break_it(folder)
        with pytest.raises(ValueError, match=message):
            read_instance_mask_folder(folder)


@pytest.mark.large
@pytest.mark.skipif(not DSB.is_dir(), reason="DSB-2018 nuclei data not present")
def test_dsb2018_counts_and_boxes():
    data = read_instance_mask_folder(DSB)
    assert len(data) == 531 and data.num_boxes == 23523
    with open(DSB / "images.csv") as f:
        sizes = {r["image_id"]: (int(r["height"]), int(r["width"]), int(r["n_instances"]))
                 for r in csv.DictReader(f)}
    with open(DSB / "instances.csv") as f:
        expected = {}
        for r in csv.DictReader(f):
            box = [int(r["x_min"]), int(r["y_min"]), int(r["x_max"]) + 1,
                   int(r["y_max"]) + 1]
            expected.setdefault(r["image_id"], {})[r["mask_id"]] = box
    for i, image_id in enumerate(data.ids):
        height, width, count = sizes[image_id]
        assert data.images[i].shape == (height, width, 3)
        assert len(data.boxes[i]) == count
        mask_ids = data.metadata["mask_ids"][i]
        assert data.boxes[i].tolist() == [expected[image_id][m] for m in mask_ids]
        assert data.instance_masks[i].max() == count
    assert data.stats()["max_boxes_per_image"] == 375


def test_a_missing_image_names_its_subfolder(tmp_path):
    folder = _make_folder(tmp_path / "stage1_train")
    (folder / "bb" / "images" / "bb.png").rename(folder / "bb" / "images" / "b.png")
    # The layout is still recognised (from the root or its parent), so the
    # reader can say which folder is broken.
    assert is_instance_mask_folder(folder) and is_instance_mask_folder(tmp_path)
    for root in (folder, tmp_path):
        with pytest.raises(ValueError, match=r"Image folder 'bb' \(.*stage1_train.bb\) "
                           r"has no image images/bb\.png \(found: \['b\.png'\]\).*"
                           r"Add or rename the image"):
            read_instance_mask_folder(root)
    shutil.rmtree(folder / "bb" / "images")
    with pytest.raises(ValueError, match=r"Image folder 'bb' .* \(found: no images/"):
        read_instance_mask_folder(folder)
    # A subfolder that is no image folder at all is named too.
    shutil.rmtree(folder / "bb")
    (folder / "cc" / "other").mkdir(parents=True)
    assert not is_instance_mask_folder(folder)
    with pytest.raises(ValueError, match=r"not an instance-mask folder.*1 of 2 "
                       r"subfolders have neither images/ nor masks/: \['cc'\]"):
        read_instance_mask_folder(tmp_path)
