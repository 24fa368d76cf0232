"""The line-by-line reader of tagged column files that every reader of
`kerasmtl.data.text.readers` calls: sentence splitting, comments and ids,
CoNLL-U word IDs, the all-`_` "unlabelled" rule, tag whitespace, IOB2 checks
and UTF-8 decoding, with errors that name the file and the line (the rules
are listed in that module's docstring).
"""

from __future__ import annotations

import codecs
import re
import warnings
from pathlib import Path

from kerasmtl.data.text.container import TaggedCorpus

UNSPECIFIED = "_"

_INT_ID = re.compile(r"^[1-9][0-9]*$")
_RANGE_ID = re.compile(r"^[1-9][0-9]*-[1-9][0-9]*$")
_EMPTY_NODE_ID = re.compile(r"^[0-9]+\.[1-9][0-9]*$")
_SENT_ID = re.compile(r"^#\s*sent_id\s*=\s*(.*\S)\s*$")


def read_columns(
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
