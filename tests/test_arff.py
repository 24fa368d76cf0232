"""ARFF reader, MULAN label files and the shared MULAN benchmark folders."""

import random
from pathlib import Path

import numpy as np
import pytest

from kerasmtl.data.tabular.arff import read_arff
from kerasmtl.data.tabular.mulan import (
    load_mulan,
    load_mulan_benchmark,
    read_mulan_labels,
)

SHARED_DATA = Path(__file__).parents[2] / "shared" / "data"

HEADER = """% a comment line
@RELATION 'toy data'

@attribute 'Att 1' NUMERIC
@Attribute colour {red,'light blue',green}   % trailing comment
@attribute n integer
@attribute Class2 {0,1}
@ATTRIBUTE Class1 {0,1}
@data
"""
XML = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    '<labels xmlns="http://mulan.sourceforge.net/labels">\n{}</labels>\n'
)


def write(tmp_path, name, text, newline="\n"):
    path = tmp_path / name
    path.write_bytes(text.replace("\n", newline).encode("utf-8"))
    return path


def labels_xml(tmp_path, *names):
    body = "".join(f'<label name="{n}"></label>\n' for n in names)
    return write(tmp_path, "labels.xml", XML.format(body))


def test_dense_rows_quotes_comments_missing_and_crlf(tmp_path):
    text = HEADER + (
        "1.5, red, 3, 0, 1\n"
        "% comment between rows\n"
        "\n"
        "?, 'light blue', 4, 1, ?\n"
        "-2e-1,green,?,1,0 % inline comment\n"
    )
    for newline in ("\n", "\r\n"):
        arff = read_arff(write(tmp_path, "toy.arff", text, newline))
        assert arff.relation == "toy data"
        assert arff.attribute_names == ["Att 1", "colour", "n", "Class2", "Class1"]
        assert [a.kind for a in arff.attributes] == [
            "numeric", "nominal", "numeric", "nominal", "nominal"
        ]
        assert arff.attributes[1].values == ("red", "light blue", "green")
        # Nominal values are indices of the declared values; '?' is NaN.
        np.testing.assert_array_equal(
            arff.data,
            [[1.5, 0, 3, 0, 1], [np.nan, 1, 4, 1, np.nan], [-0.2, 2, np.nan, 1, 0]],
        )
        assert arff.row_lines.tolist() == [10, 13, 14]
        assert arff.nominal_value(1, 1) == "light blue"
        assert arff.nominal_value(1, 4) is None


def test_sparse_rows_equal_their_dense_form(tmp_path):
    header = (
        "@relation s\n@attribute a numeric\n@attribute b numeric\n"
        "@attribute c {x,y}\n@attribute d {0,1}\n@data\n"
    )
    sparse = read_arff(write(tmp_path, "s.arff", header + (
        "{1 2.5,3 1}\n{}\n{ 0 -1 , 2 y }\n{2 'y',1 ?}\n"
    )))
    dense = read_arff(write(tmp_path, "d.arff", header + (
        "0,2.5,x,1\n0,0,x,0\n-1,0,y,0\n0,?,y,0\n"
    )))
    # Unlisted attributes are 0: the first declared value of a nominal one.
    np.testing.assert_array_equal(sparse.data, dense.data)
    np.testing.assert_array_equal(
        sparse.data, [[0, 2.5, 0, 1], [0, 0, 0, 0], [-1, 0, 1, 0], [0, np.nan, 1, 0]]
    )


def test_unquoted_name_glued_to_nominal_values_and_no_rows(tmp_path):
    arff = read_arff(write(tmp_path, "g.arff", "@relation g\n@attribute L{0,1}\n@data\n"))
    assert arff.attributes[0].name == "L" and arff.attributes[0].values == ("0", "1")
    assert arff.data.shape == (0, 1)


# Lines 1-5: @relation and four attributes.
BAD_HEADER = (
    "@relation r\n@attribute 'Att 1' numeric\n@attribute colour {red,green}\n"
    "@attribute n numeric\n@attribute c {0,1}\n"
)


# One test per table (not parametrized): each case is a few milliseconds, far
# less than the per-test session clearing in conftest.
BAD_ROWS = [
        ("1,2", r"2 values, but 4 attributes are declared"),
        ("abc,red,1,0", r"attribute 'Att 1' \(numeric\) has value 'abc', which is not a number"),
        ("1,blue,1,0", r"attribute 'colour' has value 'blue', which is not one of its declared "
         r"values \['red', 'green'\]"),
        ("{9 1}", r"sparse index 9 is out of range: 4 attributes"),
        ("{0 1,0 2}", r"sparse index 0 appears twice"),
        ("{0}", r"sparse entry '0' is not '<index> <value>'"),
        ("1,'red,1,0", r"unclosed ' quote"),
        ("1,red,1,0,{3}", r"instance weights"),
]
BAD_HEADER_LINES = [
        ("@attribute s string", r"attribute 's' is of type 'string'"),
        ("@attribute s foo", r"attribute 's' has unknown type 'foo'"),
        ("@attribute n numeric", r"attribute 'n' is already declared on line 4"),
        ("@attribute e {}", r"nominal attribute 'e' has no values"),
        ("@attribute e {a,a}", r"nominal attribute 'e' repeats a value"),
        ("@attribute e {a,b", r"'\{' without a matching '\}'"),
        ("1,2,3,4", r"expected @relation, @attribute or @data"),
]


def test_malformed_rows_name_file_and_line(tmp_path):
    for row, message in BAD_ROWS:
        path = write(tmp_path, "bad.arff", BAD_HEADER + "@data\n" + row + "\n")
        with pytest.raises(ValueError, match=rf"bad\.arff:7: {message}"):
            read_arff(path)


def test_malformed_header_names_file_and_line(tmp_path):
    for line, message in BAD_HEADER_LINES:
        path = write(tmp_path, "bad.arff", BAD_HEADER + line + "\n@data\n")
        with pytest.raises(ValueError, match=rf"bad\.arff:6: {message}"):
            read_arff(path)


def test_missing_data_section_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match=r"no @data section"):
        read_arff(write(tmp_path, "h.arff", "@relation r\n@attribute a numeric\n"))
    with pytest.raises(ValueError, match=r"does not exist"):
        read_arff(tmp_path / "nope.arff")
    latin = tmp_path / "latin.arff"
    latin.write_bytes("@relation caf\xe9\n@attribute a numeric\n@data\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin\.arff: not UTF-8 text"):
        read_arff(latin)


def test_mulan_labels_flat_hierarchical_and_errors(tmp_path):
    assert read_mulan_labels(labels_xml(tmp_path, "b", "a")) == ["b", "a"]
    nested = write(tmp_path, "h.xml", XML.format(
        '<label name="root"><label name="child1"><label name="leaf"/></label>'
        '<label name="child2"/></label><label name="other"/>'
    ))
    # Flattened in document order: a parent before its children.
    assert read_mulan_labels(nested) == ["root", "child1", "leaf", "child2", "other"]
    plain = write(tmp_path, "p.xml", '<labels><label name="x"/></labels>')
    assert read_mulan_labels(plain) == ["x"]
    broken = write(tmp_path, "broken.xml", '<labels>\n<label name="x">\n</labels>')
    with pytest.raises(ValueError, match=r"broken\.xml:3: not well-formed XML"):
        read_mulan_labels(broken)
    with pytest.raises(ValueError, match=r"listed twice"):
        read_mulan_labels(labels_xml(tmp_path, "a", "a"))
    with pytest.raises(ValueError, match=r"no <label> elements"):
        read_mulan_labels(write(tmp_path, "e.xml", XML.format("")))
    with pytest.raises(ValueError, match=r"expected <labels>"):
        read_mulan_labels(write(tmp_path, "w.xml", "<foo/>"))


def test_load_mulan_matches_labels_by_name_and_one_hot_encodes(tmp_path):
    arff = write(tmp_path, "toy.arff", HEADER + (
        "1.5,red,3,0,1\n?,'light blue',4,1,?\n-0.2,?,5,1,0\n"
    ))
    # The XML lists Class1 before Class2; the ARFF has Class2 first.
    data = load_mulan(arff, labels_xml(tmp_path, "Class1", "Class2"), task_name="tags")
    assert data.label_names == ["Class2", "Class1"]  # ARFF order
    np.testing.assert_array_equal(data.labels, [[0, 1], [1, -1], [1, 0]])
    assert data.labels.dtype == np.int32 and data.features.dtype == np.float32
    assert data.feature_names == [
        "Att 1", "colour=red", "colour=light blue", "colour=green", "n"
    ]
    np.testing.assert_array_equal(
        data.features,
        np.float32([[1.5, 1, 0, 0, 3], [np.nan, 0, 1, 0, 4], [-0.2, 0, 0, 0, 5]]),
    )
    x, y = data.as_xy()
    assert set(y) == {"tags"} and x.shape == (3, 5)


def test_load_mulan_reversed_nominal_and_numeric_labels(tmp_path):
    arff = write(tmp_path, "r.arff", (
        "@relation r\n@attribute f numeric\n@attribute A {1,0}\n@attribute B numeric\n"
        "@data\n0.5,1,0\n0.25,0,1\n{1 1}\n"
    ))
    data = load_mulan(arff, labels_xml(tmp_path, "A", "B"))
    # {1,0}: index 0 is the value '1'; a sparse row's unlisted A is index 0 too.
    np.testing.assert_array_equal(data.labels, [[1, 0], [0, 1], [1, 0]])
    np.testing.assert_array_equal(data.features[:, 0], [0.5, 0.25, 0.0])


def test_load_mulan_errors(tmp_path):
    arff = write(tmp_path, "toy.arff", HEADER + "1,red,3,0,1\n2,green,4,?,?\n")
    with pytest.raises(ValueError, match=r"\['Class3'\] named in .*labels\.xml are not "
                       r"attributes of .*toy\.arff"):
        load_mulan(arff, labels_xml(tmp_path, "Class1", "Class3"))
    with pytest.raises(ValueError, match=r"toy\.arff: 1 row\(s\) have every label "
                       r"missing .* line\(s\) \[11\]"):
        load_mulan(arff, labels_xml(tmp_path, "Class1", "Class2"))
    with pytest.raises(ValueError, match=r"toy\.arff:5: label 'colour' is nominal "
                       r"\{red,light blue,green\}"):
        load_mulan(arff, labels_xml(tmp_path, "colour"))
    with pytest.raises(ValueError, match=r"toy\.arff:11: label 'n' has value 4"):
        load_mulan(
            write(tmp_path, "toy.arff", HEADER + "1,red,1,0,1\n2,green,4,0,1\n"),
            labels_xml(tmp_path, "n"),
        )


def test_benchmark_folder_dev_split_and_missing_files(tmp_path):
    folder = tmp_path / "toy"
    folder.mkdir()
    rows = "".join(f"{i},{i % 2}\n" for i in range(6))
    write(folder, "toy-train.arff",
          "@relation t\n@attribute f numeric\n@attribute L {0,1}\n@data\n" + rows)
    with pytest.raises(ValueError, match=r"incomplete; expected one MULAN XML label "
                       r"file \(found \[\]\); dev_split_seed0\.txt"):
        load_mulan_benchmark(folder)
    labels_xml(folder, "L")
    write(folder, "dev_split_seed0.txt", "# comment\n4\n1\n")
    train, dev = load_mulan_benchmark(folder)
    assert train.features[:, 0].tolist() == [0, 2, 3, 5]
    assert dev.features[:, 0].tolist() == [1, 4]
    assert dev.labels[:, 0].tolist() == [1, 0]
    everything, none = load_mulan_benchmark(folder, dev_split=False)
    assert len(everything) == 6 and none is None
    write(folder, "dev_split_seed0.txt", "1\n6\n")
    with pytest.raises(ValueError, match=r"dev_split_seed0\.txt:2: row index 6 is out "
                       r"of range for 6 rows"):
        load_mulan_benchmark(folder)
    with pytest.raises(ValueError, match=r"does not exist"):
        load_mulan_benchmark(tmp_path / "absent")


# Counts from the READMEs of ../shared/data/{yeast,emotions,scene}.
BENCHMARKS = {
    "yeast": (1500, 103, 14, 4.228, 300),
    "emotions": (391, 72, 6, 1.813, 78),
    "scene": (1211, 294, 6, 1.062, 242),
}
YEAST_POSITIVES = {
    "Class1": 476, "Class2": 645, "Class3": 598, "Class4": 532, "Class5": 441,
    "Class6": 378, "Class7": 261, "Class8": 289, "Class9": 98, "Class10": 161,
    "Class11": 198, "Class12": 1128, "Class13": 1116, "Class14": 21,
}


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_shared_mulan_benchmarks_match_their_readmes(name):
    folder = SHARED_DATA / name
    if not folder.is_dir():
        pytest.skip(f"{folder} is not present")
    instances, features, labels, cardinality, dev_size = BENCHMARKS[name]
    full, _ = load_mulan_benchmark(folder, dev_split=False)
    assert full.features.shape == (instances, features)
    assert full.labels.shape == (instances, labels)
    assert not np.isnan(full.features).any() and set(np.unique(full.labels)) == {0, 1}
    np.testing.assert_allclose(full.label_cardinality(), cardinality, atol=5e-4)
    if name == "yeast":
        assert dict(zip(full.label_names, (full.labels == 1).sum(0).tolist())) == (
            YEAST_POSITIVES
        )
    train, dev = load_mulan_benchmark(folder)
    assert (len(train), len(dev)) == (instances - dev_size, dev_size)
    # The README's recipe for the dev rows.
    dev_rows = sorted(random.Random(0).sample(range(instances), dev_size))
    np.testing.assert_array_equal(dev.features, full.features[dev_rows])
    train_rows = sorted(set(range(instances)) - set(dev_rows))
    np.testing.assert_array_equal(train.labels, full.labels[train_rows])


def test_shared_emotions_agrees_with_scipy_reader():
    path = SHARED_DATA / "emotions" / "emotions-train.arff"
    if not path.is_file():
        pytest.skip(f"{path} is not present")
    scipy_arff = pytest.importorskip("scipy.io.arff")
    reference, meta = scipy_arff.loadarff(path)
    ours = read_arff(path)
    assert ours.attribute_names == list(meta.names())
    numeric = [n for n in meta.names() if meta[n][0] == "numeric"]
    for name in numeric:
        np.testing.assert_array_equal(
            ours.data[:, ours.attribute_names.index(name)], reference[name]
        )
    label = meta.names()[-1]
    np.testing.assert_array_equal(
        ours.data[:, -1], reference[label].astype(str).astype(float)
    )


def test_load_mulan_refuses_a_label_missing_from_the_xml(tmp_path):
    arff = write(tmp_path, "y.arff", (
        "@relation y\n@attribute Att1 numeric\n@attribute flag {0,1}\n"
        "@attribute Class1 {0,1}\n@attribute Class2 {0,1}\n@attribute Class3 {0,1}\n"
        "@attribute Class4 numeric\n@data\n"
        "0.5,1,0,1,1,0\n0.25,0,1,0,0,1\n"
    ))
    # The last label left out: named like the others.
    with pytest.raises(ValueError, match=r"labels\.xml does not name the attribute\(s\) "
                       r"'Class4' \(binary, named like label 'Class1'\) of .*y\.arff"):
        load_mulan(arff, labels_xml(tmp_path, "Class1", "Class2", "Class3"))
    # A label in the middle left out: it lies among the labels.
    with pytest.raises(ValueError, match=r"'Class2' \(binary, among the labels\).*"
                       r"add a <label name=.*labels\.xml; if they are features, name "
                       r"them in `extra_features`"):
        load_mulan(arff, labels_xml(tmp_path, "Class1", "Class3", "Class4"))
    data = load_mulan(arff, labels_xml(tmp_path, "Class1", "Class2", "Class3", "Class4"))
    # A binary feature named unlike the labels, outside them, stays a feature.
    assert data.feature_names == ["Att1", "flag=0", "flag=1"]
    data = load_mulan(arff, labels_xml(tmp_path, "Class1", "Class2", "Class3"),
                      extra_features=["Class4"])
    assert data.feature_names == ["Att1", "flag=0", "flag=1", "Class4"]
    with pytest.raises(ValueError, match=r"`extra_features`: \['nope'\]"):
        load_mulan(arff, labels_xml(tmp_path, "Class1"), extra_features=["nope"])
