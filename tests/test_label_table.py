"""CSV label tables, image folders with a label table, and `MultiLabelData`."""

import numpy as np
import pytest
import tensorflow as tf

from kerasmtl.data.tabular.container import (
    MultiLabelData,
    image_folder_with_labels,
    read_label_csv,
)
from kerasmtl.tasks.multilabel import MultiLabel


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_read_label_csv_values_ids_and_default_features(tmp_path):
    path = write(tmp_path, "t.csv", (
        "id,f1,cat,f2,dog\n"
        "a,0.5,1,2,0\n"
        "b,,TRUE,3,\n"
        "\n"
        "c,-1e2,false,4,-1\n"
        'd,"7",?,8,true\n'
    ))
    data = read_label_csv(path, ["dog", "cat"], id_column="id")
    assert data.label_names == ["dog", "cat"]
    assert data.feature_names == ["f1", "f2"]
    assert data.ids == ["a", "b", "c", "d"]
    np.testing.assert_array_equal(data.labels, [[0, 1], [-1, 1], [-1, 0], [1, -1]])
    assert data.labels.dtype == np.int32
    # An empty feature cell is NaN.
    np.testing.assert_array_equal(
        data.features, np.float32([[0.5, 2], [np.nan, 3], [-100, 4], [7, 8]])
    )
    only_f2 = read_label_csv(path, ["cat"], feature_columns=["f2"], id_column="id")
    assert only_f2.features[:, 0].tolist() == [2, 3, 4, 8]


def test_read_label_csv_other_delimiter(tmp_path):
    path = write(tmp_path, "t.tsv", "x\ty\tL\n1\t2\t1\n")
    data = read_label_csv(path, ["L"], delimiter="\t", feature_key="features")
    x, y = data.as_xy()
    np.testing.assert_array_equal(x["features"], [[1, 2]])
    assert y["labels"].tolist() == [[1]]


BAD_TABLES = [
        ("f,L\n1,2\n", {}, r"t\.csv:2, column 'L': label value '2' is not one of"),
        ("f,L\n1,1\nx,0\n", {}, r"t\.csv:3, column 'f': feature value 'x' is not a number"),
        ("f,L\n1,1,3\n", {}, r"t\.csv:2: 3 cells, but the header has 2"),
        ("f,L\n1,1\n", {"label_columns": ["M"]}, r"label column\(s\) \['M'\] not in the header"),
        ("f,L\n1,1\n", {"feature_columns": ["L"]}, r"\['L'\] are both features and labels"),
        ("f,f\n1,1\n", {}, r"t\.csv:1: duplicate column names \['f'\]"),
        ("", {}, r"the file is empty"),
]


def test_read_label_csv_errors(tmp_path):
    for text, kwargs, message in BAD_TABLES:
        kwargs = {"label_columns": ["L"], **kwargs}
        with pytest.raises(ValueError, match=message):
            read_label_csv(write(tmp_path, "t.csv", text), **kwargs)


def test_multilabel_data_dataset_select_and_checks():
    data = MultiLabelData(
        np.arange(10, dtype="float32").reshape(5, 2),
        np.array([[1, 0], [0, 1], [1, 1], [-1, 0], [0, 0]]),
        ["a", "b"], ["x", "y"], task_name="tags", ids=list("pqrst"),
    )
    batches = list(data.to_dataset(batch_size=2))
    assert [b[1]["tags"].shape[0] for b in batches] == [2, 2, 1]
    assert batches[0][0].dtype == tf.float32 and batches[0][1]["tags"].dtype == tf.int32
    part = data.select([4, 0])
    assert part.ids == ["t", "p"] and part.labels.tolist() == [[0, 0], [1, 0]]
    assert data.select(data.labels[:, 0] == 1).ids == ["p", "r"]
    assert data.label_cardinality() == pytest.approx(4 / 5)  # 1 + 1 + 2 + 0 + 0
    task = MultiLabel.from_data(data, threshold=0.4)
    assert (task.name, task.num_labels, task.threshold) == ("tags", 2, 0.4)
    with pytest.raises(ValueError, match=r"labels must be 1 \(present\), 0 \(absent\) "
                       r"or -1 \(unknown\); found \[2\]"):
        MultiLabelData(np.zeros((1, 1)), np.array([[2]]), ["a"], ["x"])
    with pytest.raises(ValueError, match=r"features has 2 rows but labels has 1"):
        MultiLabelData(np.zeros((2, 1)), np.array([[1]]), ["a"], ["x"])
    with pytest.raises(ValueError, match=r"label_names has 2 names for 1 columns"):
        MultiLabelData(np.zeros((1, 1)), np.array([[1]]), ["a"], ["x", "y"])


def save_image(path, pixels, fmt="png"):
    pixels = tf.constant(np.asarray(pixels, dtype="uint8"))
    data = tf.io.encode_png(pixels) if fmt == "png" else tf.io.encode_jpeg(pixels, quality=100)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.numpy())


def test_image_folder_decodes_png_jpeg_gray_rgba_to_rgb(tmp_path):
    images = tmp_path / "images"
    save_image(images / "rgb.png", np.full((4, 6, 3), [255, 0, 51]))
    save_image(images / "sub" / "gray.png", np.full((5, 5, 1), 102))
    save_image(images / "rgba.png", np.full((3, 3, 4), [0, 255, 0, 10]))
    save_image(images / "photo.jpg", np.full((8, 8, 3), 128), fmt="jpeg")
    table = write(tmp_path, "labels.csv", (
        "image,sky,sea\nrgb.png,1,0\nsub/gray.png,0,\nrgba.png,true,false\nphoto.jpg,-1,1\n"
    ))
    ds = image_folder_with_labels(images, table, image_size=(2, 3), batch_size=3,
                                  task_name="scene")
    batches = list(ds)
    assert len(batches) == 2
    x, y = batches[0]
    assert x["image"].shape == (3, 2, 3, 3) and x["image"].dtype == tf.float32
    assert y["scene"].dtype == tf.int32
    labels = np.concatenate([b[1]["scene"].numpy() for b in batches])
    np.testing.assert_array_equal(labels, [[1, 0], [0, -1], [1, 0], [-1, 1]])
    # Constant images stay constant after resizing; values scaled to [0, 1].
    np.testing.assert_allclose(x["image"][0], np.broadcast_to([1, 0, 0.2], (2, 3, 3)), atol=1e-6)
    np.testing.assert_allclose(x["image"][1], np.full((2, 3, 3), 0.4), atol=1e-6)
    np.testing.assert_allclose(x["image"][2], np.broadcast_to([0, 1, 0], (2, 3, 3)), atol=1e-6)
    np.testing.assert_allclose(batches[1][0]["image"][0], np.full((2, 3, 3), 128 / 255),
                               atol=2 / 255)


def test_image_folder_missing_or_unreadable_files_are_errors(tmp_path):
    images = tmp_path / "images"
    save_image(images / "a.png", np.zeros((2, 2, 3)))
    (images / "notes.png").write_text("not an image")
    table = write(tmp_path, "labels.csv", "file,x\na.png,1\nb.png,0\nnotes.png,1\n")
    with pytest.raises(ValueError, match=r"2 image\(s\) listed in .*labels\.csv cannot be "
                       r"read from .*images: 'b\.png' \(line 3\) is missing; 'notes\.png' "
                       r"\(line 4\) is not a PNG, JPEG, GIF or BMP"):
        image_folder_with_labels(images, table, image_column="file")
    with pytest.raises(ValueError, match=r"image column \['image'\] not in the header"):
        image_folder_with_labels(images, table)
    with pytest.raises(ValueError, match=r"Invalid value for argument `image_size`"):
        image_folder_with_labels(images, table, image_column="file", image_size=(0, 2))
    empty = write(tmp_path, "empty.csv", "file,x\n")
    with pytest.raises(ValueError, match=r"empty\.csv: the table has a header but no rows"):
        image_folder_with_labels(images, empty, image_column="file")
