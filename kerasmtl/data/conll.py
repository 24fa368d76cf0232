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

import codecs
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

from kerasmtl.data.tagging import TaggedCorpus

# CoNLL-U columns: ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC.
CONLLU_COLUMNS = {"lemma": 2, "upos": 3, "xpos": 4, "feats": 5, "deprel": 7}
UNSPECIFIED = "_"

_INT_ID = re.compile(r"^[1-9][0-9]*$")
_RANGE_ID = re.compile(r"^[1-9][0-9]*-[1-9][0-9]*$")
_EMPTY_NODE_ID = re.compile(r"^[0-9]+\.[1-9][0-9]*$")
_SENT_ID = re.compile(r"^#\s*sent_id\s*=\s*(.*\S)\s*$")


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
    return _read_columns(
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
    return _read_columns(
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
    return _read_columns(
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


# -- shared reader ------------------------------------------------------------------


def _read_columns(
    path,
    *,
    format_name: str,
    num_columns: int | None,
    delimiter: str | None,
    token_column: int,
    tag_columns: dict[str, int],
    id_column: int | None,
    conllu_ids: bool = False,
    comment_prefix: str | None = "#",
    docstart: str | None = None,
    keep_underscore: frozenset = frozenset(),
    iob2_tasks: frozenset = frozenset(),
) -> TaggedCorpus:
    path = Path(path)
    if not tag_columns:
        raise ValueError("`tag_columns` is empty: name at least one tag column.")
    sentences, tags, ids = [], {task: [] for task in tag_columns}, []
    words, word_tags, sent_id, first_line = [], {t: [] for t in tag_columns}, None, 0
    word_lines = []
    expected = None
    # Kept-but-suspect tags: {kind: [count, first line, example]}.
    stripped = [0, 0, ""]
    not_iob2 = {task: {"tag": [0, 0, ""], "start": [0, 0, ""]} for task in iob2_tasks}

    def error(lineno, message):
        return ValueError(f"{path}:{lineno}: {message}")

    def check_layout(count, lineno):
        for name, column in [("token", token_column), *tag_columns.items()]:
            if not -count <= column < count:
                where = f"{path}:{lineno}: " if lineno else ""
                raise ValueError(
                    f"{where}column {column} for {name!r} does not exist in "
                    f"lines of {count} columns. Check `token_column` and "
                    "`tag_columns`."
                )
        return count, lineno

    if num_columns is not None:
        expected = check_layout(num_columns, None)

    def end_sentence():
        nonlocal words, word_tags, sent_id, word_lines
        if words:
            sentences.append(words)
            for task, values in word_tags.items():
                unlabelled = task not in keep_underscore and all(
                    v == UNSPECIFIED for v in values
                )
                tags[task].append(None if unlabelled else values)
                if task in iob2_tasks and not unlabelled:
                    _check_iob2(values, word_lines, not_iob2[task])
            ids.append(sent_id if sent_id is not None else f"{path.name}:{first_line}")
        words, word_tags, sent_id, word_lines = [], {t: [] for t in tag_columns}, None, []

    with open(path, encoding="utf-8-sig", newline=None) as f:
        lines = _utf8_lines(f, path)
        for lineno, line in enumerate(lines, 1):
            line = line.rstrip("\n")
            if not line.strip():
                end_sentence()
                continue
            if comment_prefix is not None and line.startswith(comment_prefix):
                if words and (conllu_ids or id_column is not None):
                    # With word IDs a token line never starts with '#', so this
                    # is a comment inside a sentence: a blank line is missing.
                    raise error(
                        lineno,
                        "comment line inside a sentence; comments go before "
                        "a sentence's first token (is the blank line before "
                        "this comment missing?)",
                    )
                if not words:
                    match = _SENT_ID.match(line)
                    if match:
                        sent_id = match.group(1)
                    continue
            columns = line.split(delimiter) if delimiter else line.split()
            if expected is None:
                expected = check_layout(len(columns), lineno)
            if len(columns) != expected[0]:
                like = f" like line {expected[1]}" if expected[1] else ""
                raise error(
                    lineno,
                    f"expected {expected[0]} "
                    f"{'tab-separated ' if delimiter == chr(9) else ''}columns "
                    f"({format_name} format){like}, found {len(columns)}: "
                    f"{line[:80]!r}",
                )
            if docstart is not None and columns[token_column] == docstart:
                end_sentence()
                continue
            if id_column is not None:
                word_id = columns[id_column]
                if conllu_ids and (_RANGE_ID.match(word_id) or _EMPTY_NODE_ID.match(word_id)):
                    continue  # multi-word token range or empty node
                if not _INT_ID.match(word_id):
                    raise error(
                        lineno,
                        f"word ID {word_id!r} is not a positive integer"
                        + (" (nor a range 'n-m' or an empty node 'n.k')" if conllu_ids else "")
                        + ".",
                    )
                if int(word_id) != len(words) + 1:
                    raise error(
                        lineno,
                        f"word ID {word_id} where {len(words) + 1} was expected; "
                        "each sentence numbers its words 1, 2, 3, ... and ends "
                        "with a blank line.",
                    )
            token = columns[token_column]
            if not token:
                raise error(lineno, "empty token.")
            if not words:
                first_line = lineno
            words.append(token)
            word_lines.append(lineno)
            for task, column in tag_columns.items():
                value = columns[column]
                if value != value.strip():
                    _count(stripped, lineno, value)
                    value = value.strip()
                if not value:
                    raise error(lineno, f"empty tag for task '{task}'.")
                word_tags[task].append(value)
        end_sentence()
    if stripped[0]:
        warnings.warn(
            f"{path}: stripped the whitespace around {stripped[0]} tag(s) (first: "
            f"{stripped[2]!r} on line {stripped[1]}). Check the file's column "
            "separators.",
            stacklevel=3,
        )
    for task, found in not_iob2.items():
        problems = []
        if found["tag"][0]:
            count, lineno, tag = found["tag"]
            problems.append(
                f"{count} tag(s) that are not 'O', 'B-TYPE' or 'I-TYPE' (first: "
                f"{tag!r} on line {lineno})"
            )
        if found["start"][0]:
            count, lineno, tag = found["start"]
            problems.append(
                f"{count} I-TYPE tag(s) that do not continue an entity of that "
                f"type (first: {tag} on line {lineno})"
            )
        if problems:
            warnings.warn(
                f"{path}: task '{task}' is read as IOB2 but has "
                f"{' and '.join(problems)}; they are kept as they are. Entity "
                "metrics read such an I-TYPE as the start of an entity and "
                "reject other tags. Convert the file to IOB2 (from IOB1: an "
                "I-TYPE that starts an entity becomes B-TYPE), or, with "
                "`read_iob`, pass `iob2_tasks` without this task if its column "
                "is not IOB2.",
                stacklevel=3,
            )
    return TaggedCorpus(sentences, tags, ids)


def _count(found, lineno, example):
    if not found[0]:
        found[1:] = [lineno, example]
    found[0] += 1


def _check_iob2(values, lines, found):
    entity = None  # type of the entity the previous tag is part of
    for k, (tag, lineno) in enumerate(zip(values, lines)):
        prefix, kind = tag[:2], tag[2:]
        if tag != "O" and (prefix not in ("B-", "I-") or not kind):
            _count(found["tag"], lineno, tag)
            kind = None
        elif prefix == "I-" and entity != kind:
            after = repr(values[k - 1]) if k else "the sentence start"
            _count(found["start"], lineno, f"{tag!r} after {after}")
        entity = None if tag == "O" else kind


def _utf8_lines(file, path):
    """The lines of `file`, with a decoding error that names the line."""
    try:
        yield from file
    except UnicodeDecodeError as err:
        where, reason = f"{path}:", err.reason
        # The error's offset is within a buffer; decode the whole file again
        # to find the line.
        data = path.read_bytes()
        start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
        try:
            data[start:].decode("utf-8")
        except UnicodeDecodeError as whole:
            offset, reason = start + whole.start, whole.reason
            lineno = len(re.split(rb"\r\n|\r|\n", data[:offset]))
            where = f"{path}:{lineno}: byte 0x{data[offset]:02x} at offset {offset}"
        raise ValueError(
            f"{where} is not UTF-8 ({reason}). This reader reads UTF-8 "
            "files: convert the file, e.g. `iconv -f latin1 -t utf-8 IN > OUT` "
            "if it is Latin-1."
        ) from None
