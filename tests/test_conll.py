"""File readers: CoNLL-U, IOB / CoNLL-2003 / UNER column files, joined TSV, on
small files written here; the real shared UD-EWT/UNER files when present."""

import collections
import warnings
from pathlib import Path

import pytest

from kerasmtl.data.text.container import merge_corpora
from kerasmtl.data.text.readers import (
    load_ud_ewt_uner,
    read_conllu,
    read_iob,
    read_joined_tsv,
    read_uner,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "ud_ewt_uner"


def write(tmp_path, name, lines, newline="\n", end="\n"):
    path = tmp_path / name
    path.write_bytes((newline.join(lines) + end).encode("utf-8"))
    return path


def conllu_line(i, form, upos="NOUN", xpos="NN", feats="_"):
    return "\t".join([str(i), form, form.lower(), upos, xpos, feats, "0", "root", "_", "_"])


CONLLU = [
    "# newdoc id = doc1",
    "# sent_id = s1",
    "# text = I don't know.",
    conllu_line(1, "I", "PRON", "PRP"),
    "2-3\tdon't\t_\t_\t_\t_\t_\t_\t_\t_",
    conllu_line(2, "do", "AUX", "VBP"),
    conllu_line(3, "n't", "PART", "RB"),
    conllu_line(4, "know", "VERB", "VB"),
    "4.1\tknows\tknow\tVERB\tVBZ\t_\t_\t_\t4:conj\t_",
    conllu_line(5, ".", "PUNCT", "."),
    "",
    "",  # a run of blank lines gives no empty sentence
    "# sent_id = s2",
    "# comment-only block below gives no sentence either",
    conllu_line(1, "Hi", "INTJ", "UH"),
    conllu_line(2, "#", "SYM", "NFP"),  # a FORM '#' is a word, not a comment
]


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_read_conllu_skips_ranges_and_empty_nodes(tmp_path, newline):
    # No blank line at the end: the last sentence is kept.
    path = write(tmp_path, "a.conllu", CONLLU, newline=newline, end="")
    corpus = read_conllu(path, fields=("upos", "xpos"))
    assert corpus.tokens == [["I", "do", "n't", "know", "."], ["Hi", "#"]]
    assert corpus.tags == {
        "upos": [["PRON", "AUX", "PART", "VERB", "PUNCT"], ["INTJ", "SYM"]],
        "xpos": [["PRP", "VBP", "RB", "VB", "."], ["UH", "NFP"]],
    }
    assert corpus.ids == ["s1", "s2"]


def test_read_conllu_field_mapping_and_unlabelled_sentences(tmp_path):
    lines = [
        conllu_line(1, "Hello", "INTJ", "_"),
        conllu_line(2, "!", "PUNCT", "_"),
        "",
        conllu_line(1, "Yes", "INTJ", "UH", feats="Polarity=Pos"),
        "",
    ]
    corpus = read_conllu(write(tmp_path, "b.conllu", lines),
                         fields={"pos": "upos", "tag": "xpos", "morph": "feats"})
    assert corpus.tasks == ["pos", "tag", "morph"]
    # All-`_` XPOS: the sentence is unlabelled for that task (masked later).
    assert corpus.tags["tag"] == [None, ["UH"]]
    # All-`_` FEATS means "no features" and stays a label.
    assert corpus.tags["morph"] == [["_", "_"], ["Polarity=Pos"]]
    # Without `# sent_id`, ids say where the sentence starts.
    assert corpus.ids == ["b.conllu:1", "b.conllu:4"]


@pytest.mark.parametrize(
    "bad_line, lineno, message",
    [
        ("2\tdo\tdo\tAUX\tVBP\t_\t0", 3, "expected 10 tab-separated columns"),
        ("x\tdo\tdo\tAUX\tVBP\t_\t0\troot\t_\t_", 3, "word ID 'x' is not a positive integer"),
        (conllu_line(1, "Bye"), 3, "word ID 1 where 2 was expected"),
        ("# sent_id = late", 3, "comment line inside a sentence"),
        ("2\t\tdo\tAUX\tVBP\t_\t0\troot\t_\t_", 3, "empty token"),
    ],
)
def test_read_conllu_malformed_line_names_file_and_line(tmp_path, bad_line, lineno, message):
    path = write(tmp_path, "bad.conllu", ["# sent_id = s", conllu_line(1, "I"), bad_line])
    with pytest.raises(ValueError, match=rf"bad\.conllu:{lineno}: {message}"):
        read_conllu(path)


def test_read_conllu_unknown_field(tmp_path):
    with pytest.raises(ValueError, match=r"Unknown CoNLL-U field 'ner'.*'upos'"):
        read_conllu(write(tmp_path, "c.conllu", CONLLU), fields=("ner",))


def test_read_iob_conll2003_style(tmp_path):
    lines = [
        "-DOCSTART- -X- -X- O",
        "",
        "EU NNP B-NP B-ORG",
        "rejects VBZ B-VP O",
        "# # B-NP O",  # inside a sentence, '#' is CoNLL-2003's token '#'
        "German JJ B-NP B-MISC",
        "",
        "-DOCSTART- -X- -X- O",
        "Peter NNP B-NP B-PER",
        "Blackburn NNP I-NP I-PER",
    ]
    # CRLF and a byte-order mark read the same as plain LF.
    path = tmp_path / "eng.train"
    path.write_bytes(b"\xef\xbb\xbf" + ("\r\n".join(lines)).encode())
    corpus = read_iob(path, tag_columns={"pos": 1, "ner": -1})
    assert corpus.tokens == [["EU", "rejects", "#", "German"], ["Peter", "Blackburn"]]
    assert corpus.tags["ner"] == [["B-ORG", "O", "O", "B-MISC"], ["B-PER", "I-PER"]]
    assert corpus.tags["pos"][0] == ["NNP", "VBZ", "#", "JJ"]
    assert corpus.ids == ["eng.train:3", "eng.train:9"]


def test_read_iob_errors_name_file_and_line(tmp_path):
    path = write(tmp_path, "x.iob", ["a O", "b O", "", "c B-PER extra"])
    with pytest.raises(ValueError, match=r"x\.iob:4: expected 2 columns .* like line 1, found 3"):
        read_iob(path)
    with pytest.raises(ValueError, match=r"x\.iob:1: column 5 for 'ner' does not exist"):
        read_iob(path, tag_columns={"ner": 5})
    with pytest.raises(ValueError, match=r"column 2 for 'ner' does not exist in lines of 2"):
        read_iob(path, tag_columns={"ner": 2}, num_columns=2)


def test_read_uner_iob2(tmp_path):
    lines = [
        "# newdoc id = d",
        "# sent_id = d-0001",
        "# text = where in tampa bay",
        "1\twhere\tO\t-\t-",
        "2\tin\tO\t-\t-",
        "3\ttampa\tB-LOC\t-\tstephen",
        "4\tbay\tI-LOC\t-\tstephen",
        "",
        "# sent_id = d-0002",
        "1\tok\tO\t-\t-",
        "",
    ]
    corpus = read_uner(write(tmp_path, "dev.iob2", lines))
    assert corpus.tokens == [["where", "in", "tampa", "bay"], ["ok"]]
    assert corpus.tags == {"ner": [["O", "O", "B-LOC", "I-LOC"], ["O"]]}
    assert corpus.ids == ["d-0001", "d-0002"]
    bad = write(tmp_path, "bad.iob2", lines[:5] + ["2\tagain\tO\t-\t-"])
    with pytest.raises(ValueError, match=r"bad\.iob2:6: word ID 2 where 3 was expected"):
        read_uner(bad)


def test_read_joined_tsv(tmp_path):
    lines = [
        "# sent_id = a-1",
        "# text = Ann left",
        "1\tAnn\tPROPN\tNNP\tB-PER",
        "2\tleft\tVERB\tVBD\tO",
        "",
        "# sent_id = a-2",
        "1\tBye\tINTJ\tUH\t_",  # NER `_` on every word: no NER labels
        "",
    ]
    corpus = read_joined_tsv(write(tmp_path, "j.tsv", lines), xpos=True)
    assert corpus.tasks == ["pos", "ner", "xpos"]
    assert corpus.tags["pos"] == [["PROPN", "VERB"], ["INTJ"]]
    assert corpus.tags["ner"] == [["B-PER", "O"], None]
    assert corpus.tags["xpos"] == [["NNP", "VBD"], ["UH"]]
    with pytest.raises(ValueError, match=r"j2\.tsv:1: expected 5 tab-separated columns"):
        read_joined_tsv(write(tmp_path, "j2.tsv", ["1\tAnn\tPROPN\tB-PER"]))


def test_load_ud_ewt_uner_missing_folder(tmp_path):
    with pytest.raises(ValueError, match=r"UD-EWT/UNER files not found.*ud_ewt_uner"):
        load_ud_ewt_uner(tmp_path)


# -- the real shared files ---------------------------------------------------------

needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"shared UD-EWT/UNER data not found at {SHARED}"
)


def entity_counts(corpus):
    counts = collections.Counter(t[2:] for s in corpus.tags["ner"] for t in s if t[:2] == "B-")
    return dict(counts)


@needs_shared
def test_real_dev_files_match_readme_and_join():
    ud = read_conllu(SHARED / "ud" / "en_ewt-ud-dev.conllu", fields={"pos": "upos"})
    uner = read_uner(SHARED / "uner" / "en_ewt-ud-dev.iob2")
    joined = read_joined_tsv(SHARED / "joined" / "en_ewt-dev.pos_ner.tsv")
    for corpus in (ud, uner, joined):
        assert (len(corpus), corpus.num_tokens) == (2001, 25149)
    assert entity_counts(joined) == {"LOC": 399, "PER": 343, "ORG": 224}
    assert len(joined.tag_set("pos")) == 17 and len(joined.tag_set("ner")) == 7
    # UNER dev lists the sentences in another order: joining on sent_id
    # reproduces the joined file exactly.
    assert merge_corpora(ud, uner) == joined


@needs_shared
@pytest.mark.large
def test_real_train_files_match_readme():
    train, dev = load_ud_ewt_uner(SHARED)
    assert (len(train), train.num_tokens) == (12543, 204579)
    assert (len(dev), dev.num_tokens) == (2001, 25149)
    assert entity_counts(train) == {"LOC": 2698, "PER": 2873, "ORG": 1434}
    ud = read_conllu(SHARED / "ud" / "en_ewt-ud-train.conllu", fields={"pos": "upos"})
    assert ud.tokens == train.tokens and ud.tags["pos"] == train.tags["pos"]
    uner = read_uner(SHARED / "uner" / "en_ewt-ud-train.uner-0c7ce0d-normalized.iob2")
    assert uner.tags["ner"] == train.tags["ner"]


# -- encodings, whitespace and IOB2 checks -------------------------------------------


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_non_utf8_file_names_file_line_and_what_to_do(tmp_path, newline):
    lines = ["# sent_id = s1", conllu_line(1, "I"), conllu_line(2, "café")]
    path = tmp_path / "latin1.conllu"
    path.write_bytes(newline.join(lines).encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.conllu:3: byte 0xe9 at offset "
                       r"\d+ is not UTF-8 .* convert the file, e\.g\. `iconv"):
        read_conllu(path)


def test_whitespace_around_tags_is_stripped_with_a_count(tmp_path):
    lines = [
        "1\tThe\tDET \tDT\tO",
        "2\tcat\tNOUN\tNN \tO",
        "3\tsat\tVERB\tVBD\t O",
        "",
    ]
    with pytest.warns(UserWarning, match=r"j\.tsv: stripped the whitespace around 3 "
                      r"tag\(s\) \(first: 'DET ' on line 1\)"):
        corpus = read_joined_tsv(write(tmp_path, "j.tsv", lines), xpos=True)
    assert corpus.tags["pos"] == [["DET", "NOUN", "VERB"]]
    assert corpus.tags["xpos"] == [["DT", "NN", "VBD"]]
    assert corpus.tags["ner"] == [["O", "O", "O"]]
    with pytest.raises(ValueError, match=r"e\.tsv:1: empty tag for task 'pos'"):
        read_joined_tsv(write(tmp_path, "e.tsv", ["1\tThe\t \tDT\tO"]))


def test_invalid_iob2_is_counted_with_the_first_line(tmp_path):
    lines = [
        "1\tin\tO\t-\t-",
        "2\ttampa\tI-LOC\t-\t-",  # I- after O
        "",
        "1\tbay\tI-LOC\t-\t-",  # I- at the sentence start
        "2\tarea\tI-LOC\t-\t-",  # continues: fine
        "3\tnow\tFOO\t-\t-",
        "4\tAnn\tB-PER\t-\t-",
        "5\tLee\tI-ORG\t-\t-",  # another type
        "",
    ]
    with pytest.warns(UserWarning) as record:
        corpus = read_uner(write(tmp_path, "x.iob2", lines))
    (message,) = [str(w.message) for w in record]
    assert "x.iob2: task 'ner' is read as IOB2 but has 1 tag(s) that are not" in message
    assert "(first: 'FOO' on line 6)" in message
    assert "3 I-TYPE tag(s) that do not continue an entity of that type (first: " \
        "'I-LOC' after 'O' on line 2)" in message
    # Kept as they are.
    assert corpus.tags["ner"][1] == ["I-LOC", "I-LOC", "FOO", "B-PER", "I-ORG"]
    with pytest.warns(UserWarning, match=r"'I-LOC' after the sentence start on line 1"):
        read_uner(write(tmp_path, "y.iob2", lines[3:]))
    # read_iob checks "ner" by default; `iob2_tasks=()` checks nothing.
    iob = write(tmp_path, "z.iob", ["a NN I-PER", "b NN O"])
    with pytest.warns(UserWarning, match=r"z\.iob: task 'ner'"):
        read_iob(iob, tag_columns={"pos": 1, "ner": 2})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_iob(iob, tag_columns={"pos": 1, "ner": 2}, iob2_tasks=())
        read_iob(iob, tag_columns={"chunk": 2})
    with pytest.raises(ValueError, match=r"`iob2_tasks`: \['tag'\].*\['pos', 'ner'\]"):
        read_iob(iob, tag_columns={"pos": 1, "ner": 2}, iob2_tasks=["tag"])
