"""Readers of tagged-text files into a `TaggedCorpus`: CoNLL-U (Universal
Dependencies), CoNLL-2003 / IOB2 column files (e.g. Universal NER), and the
joined UPOS+NER TSV files of the shared UD-EWT/UNER data.

All readers share these rules:

- A sentence is a run of token lines; blank lines (or lines of only spaces)
  end it. Runs of blank lines, and sentences made only of comments, give no
  empty sentence. A file that does not end with a blank line keeps its last
  sentence.
- Files are UTF-8 (a byte-order mark is ignored); Windows (CRLF) and old Mac
  (CR) line ends read like LF.
- Comment lines (`#` first) may only come before a sentence's first token,
  as CoNLL-U requires; `# sent_id = X` gives the sentence id, otherwise the id
  is `<file name>:<line of its first token>`.
- A tag column that is `_` (CoNLL-U's "unspecified") on every word of a
  sentence means the sentence has no labels for that task: its tags are
  `None`, encoded later as `-1` (masked, not dropped). (Not for CoNLL-U
  FEATS, where `_` means "no features".) A `_` on only some words is kept
  as the tag `"_"`.
- Malformed input (a wrong number of columns, a non-integer or out-of-order
  word ID, an empty token or tag, bytes that are not UTF-8) raises a
  `ValueError` naming the file and the line number.
- Whitespace around a tag (`"DET "`, e.g. from a stray space before a tab)
  is stripped, with one warning per file counting such tags.
- Entity columns read as IOB2 (`"ner"` in `read_iob` by default, `read_uner`,
  `read_joined_tsv`) are checked: tags that are not `O`, `B-TYPE` or `I-TYPE`,
  and `I-TYPE` tags that do not continue an entity of that type (as at a
  sentence start, or in IOB1 files), are kept as they are, with one warning
  per file that counts them and gives the first line. Entity metrics read
  such an `I-TYPE` as the start of an entity (conlleval's rule) and reject
  the other tags.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from kerasmtl.data.text.columns import read_columns
from kerasmtl.data.text.container import TaggedCorpus

# CoNLL-U columns: ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC.
CONLLU_COLUMNS = {"lemma": 2, "upos": 3, "xpos": 4, "feats": 5, "deprel": 7}


def read_conllu(
    path: str | os.PathLike, fields: Sequence[str] | Mapping[str, str] = ("upos",)
) -> TaggedCorpus:
    """Reads a Universal Dependencies CoNLL-U file.

    Tokens are the syntactic words (integer IDs): multi-word token ranges
    (`3-4  don't ...`) and empty nodes (`8.1`) are skipped, as they carry no
    tag of the basic word sequence. Word IDs must count 1, 2, 3, ... in each
    sentence (this catches a missing blank line between two sentences).

    Args:
        path: path of the `.conllu` file.
        fields: the columns to read as tasks, among `"upos"`, `"xpos"`,
            `"feats"`, `"deprel"` and `"lemma"`: a sequence (tasks named like
            the columns) or a mapping `{task_name: column}`, e.g.
            `{"pos": "upos"}`. Defaults to `("upos",)`.

    Returns:
        `TaggedCorpus` with one task per field and the `sent_id`s as ids.

    Examples:

    >>> import tempfile
    >>> text = ("# sent_id = s1\\n1-2\\tdon't\\t_\\t_\\t_\\t_\\t_\\t_\\t_\\t_\\n"
    ...         "1\\tdo\\tdo\\tAUX\\tVBP\\t_\\t0\\troot\\t_\\t_\\n"
    ...         "2\\tn't\\tnot\\tPART\\tRB\\t_\\t1\\tadvmod\\t_\\t_\\n\\n")
    >>> with tempfile.NamedTemporaryFile("w", suffix=".conllu") as f:
    ...     _ = f.write(text); f.flush()
    ...     corpus = read_conllu(f.name, fields={"pos": "upos"})
    >>> corpus.tokens, corpus.tags, corpus.ids
    ([['do', "n't"]], {'pos': [['AUX', 'PART']]}, ['s1'])
    """
    if isinstance(fields, str):
        fields = (fields,)
    mapping = dict(fields) if isinstance(fields, Mapping) else {f: f for f in fields}
    for column in mapping.values():
        if column not in CONLLU_COLUMNS:
            raise ValueError(
                f"Unknown CoNLL-U field {column!r}. Choose among "
                f"{sorted(CONLLU_COLUMNS)}."
            )
    return read_columns(
        path,
        format_name="CoNLL-U",
        num_columns=10,
        delimiter="\t",
        token_column=1,
        tag_columns={task: CONLLU_COLUMNS[c] for task, c in mapping.items()},
        id_column=0,
        conllu_ids=True,
        # An all-`_` FEATS column means "no features", a real value.
        keep_underscore=frozenset(t for t, c in mapping.items() if c == "feats"),
    )


def read_iob(
    path: str | os.PathLike,
    token_column: int = 0,
    tag_columns: Mapping[str, int] | None = None,
    delimiter: str | None = None,
    num_columns: int | None = None,
    id_column: int | None = None,
    comment_prefix: str | None = "#",
    docstart: str | None = "-DOCSTART-",
    iob2_tasks: Sequence[str] | None = None,
) -> TaggedCorpus:
    """Reads a column file of tokens and tags: CoNLL-2003, IOB2, UNER `.iob2`.

    One token per line, columns split by `delimiter`; `-DOCSTART-` lines are
    skipped. Every token line must have the same number of columns.

    CoNLL-2003 (`token POS chunk NER`, spaces): the defaults, or
    `tag_columns={"pos": 1, "ner": 3}`. Universal NER `.iob2` files
    (`ID FORM TAG - ANNOTATOR`, tabs): `read_uner` (`token_column=1`,
    `tag_columns={"ner": 2}`, `delimiter="\\t"`, `id_column=0`).

    Args:
        path: path of the file.
        token_column: int. Column of the token (negative counts from the end).
            Defaults to 0.
        tag_columns: `{task_name: column}`. Defaults to `{"ner": -1}`.
        delimiter: str or None. Column separator; `None` splits on runs of
            whitespace. Defaults to `None`.
        num_columns: int or None. Expected number of columns; `None` takes it
            from the first token line. Defaults to `None`.
        id_column: int or None. Column of a word ID that must count 1, 2, 3,
            ... in each sentence. Defaults to `None` (no IDs).
        comment_prefix: str or None. Lines starting with it before a
            sentence's first token are comments. A line starting with it
            inside a sentence is a token line (CoNLL-2003 has the token `#`).
            `None` disables comments. Defaults to `"#"`.
        docstart: str or None. A line whose token is this is skipped (and ends
            the sentence before it). Defaults to `"-DOCSTART-"`.
        iob2_tasks: sequence of str or None. Tasks whose tags are IOB2 entity
            tags, checked as the module docstring says; `()` checks none.
            Defaults to `None` (the task `"ner"`, if read).

    Returns:
        `TaggedCorpus` with one task per entry of `tag_columns`.
    """
    tag_columns = {"ner": -1} if tag_columns is None else dict(tag_columns)
    if iob2_tasks is None:
        iob2_tasks = [t for t in tag_columns if t == "ner"]
    unknown = [t for t in iob2_tasks if t not in tag_columns]
    if isinstance(iob2_tasks, str) or unknown:
        raise ValueError(
            f"Invalid value for argument `iob2_tasks`: {iob2_tasks!r}. Expected "
            f"a sequence of tasks of `tag_columns` ({list(tag_columns)})."
        )
    return read_columns(
        path,
        format_name="column",
        num_columns=num_columns,
        delimiter=delimiter,
        token_column=token_column,
        tag_columns=tag_columns,
        id_column=id_column,
        comment_prefix=comment_prefix,
        docstart=docstart,
        iob2_tasks=frozenset(iob2_tasks),
    )


def read_uner(path: str | os.PathLike) -> TaggedCorpus:
    """Reads a Universal NER `.iob2` file (`ID FORM TAG - ANNOTATOR`, tabs)
    into a corpus with the task `"ner"` and the `sent_id`s as ids."""
    return read_iob(
        path,
        token_column=1,
        tag_columns={"ner": 2},
        delimiter="\t",
        num_columns=5,
        id_column=0,
        docstart=None,
    )


def read_joined_tsv(path: str | os.PathLike, xpos: bool = False) -> TaggedCorpus:
    """Reads a joined UD + UNER file (`ID FORM UPOS XPOS NER`, tabs), as in
    `shared/data/ud_ewt_uner/joined/`.

    Args:
        path: path of the `.tsv` file.
        xpos: bool. Also read XPOS as the task `"xpos"`. Defaults to `False`.

    Returns:
        `TaggedCorpus` with tasks `"pos"` (UPOS) and `"ner"` (IOB2) (and
        `"xpos"`), and the `sent_id`s as ids. The shared files label every
        sentence for both tasks; a sentence whose NER column is `_` on every
        word would be unlabelled (`None`) for NER.
    """
    tags = {"pos": 2, "ner": 4}
    if xpos:
        tags["xpos"] = 3
    return read_columns(
        path,
        format_name="joined UPOS/XPOS/NER",
        num_columns=5,
        delimiter="\t",
        token_column=1,
        tag_columns=tags,
        id_column=0,
        iob2_tasks=frozenset({"ner"}),
    )


def load_ud_ewt_uner(
    root: str | os.PathLike, xpos: bool = False
) -> tuple[TaggedCorpus, TaggedCorpus]:
    """`(train, dev)` of UD English-EWT UPOS + Universal NER, from the joined
    files of the shared data folder.

    Args:
        root: the `ud_ewt_uner` folder (holding `joined/`), e.g.
            `../shared/data/ud_ewt_uner`.
        xpos: bool. Also read the task `"xpos"`. Defaults to `False`.

    Returns:
        `(train, dev)` corpora with tasks `"pos"` and `"ner"`: 12,543 and
        2,001 sentences.
    """
    root = Path(root)
    paths = [root / "joined" / f"en_ewt-{split}.pos_ner.tsv" for split in ("train", "dev")]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ValueError(
            f"UD-EWT/UNER files not found: {missing}. Pass the `ud_ewt_uner` "
            "folder of the shared data (e.g. ../shared/data/ud_ewt_uner), which "
            "holds joined/en_ewt-{train,dev}.pos_ner.tsv."
        )
    return read_joined_tsv(paths[0], xpos=xpos), read_joined_tsv(paths[1], xpos=xpos)
