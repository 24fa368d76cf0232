"""A built-in synthetic POS + NER corpus (no download), from a tiny grammar.

Sentences such as `Mary Chen bought the old book in New York .` or
`They book a car for Jordan Bank .` come from a handful of templates, with:

- UPOS tags (`pos`) and IOB2 entity tags (`ner`: PER, LOC, ORG) that depend on
  each other: every entity token is a PROPN, but not every PROPN is in an
  entity (`Monday`, `January`, titles like `Mr.`);
- ambiguity that only context resolves: `book`/`watch`/`visit`/... are NOUN
  after a determiner and VERB after a subject or auxiliary; `Jordan`,
  `Washington`, `Lincoln`, ... are a person, a place (after `in`/`to`/...) or
  part of an organisation (before `Bank`/`Group`/...); sentence-initial words
  are capitalised;
- out-of-vocabulary-looking names (`Talumo`) drawn from a large syllable
  space, whose tags follow from context alone.

The tags are a deterministic function of the sentence context, so a BiLSTM
learns both tasks to high accuracy. Generation is fast (thousands of
sentences in well under a second) and deterministic by seed.
"""

from __future__ import annotations

import random

from kerasmtl.data.text.container import TaggedCorpus

POS_TAGS = [
    "ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "NOUN", "NUM", "PRON",
    "PROPN", "PUNCT", "SCONJ", "VERB",
]
NER_TAGS = ["O", "B-LOC", "B-ORG", "B-PER", "I-LOC", "I-ORG", "I-PER"]

_DETS = ["the", "a", "this", "every"]
_ADJS = ["big", "small", "old", "new", "red", "quiet", "famous", "local"]
# Words that are NOUN after a determiner and VERB after a subject/auxiliary.
_AMBIGUOUS = ["book", "watch", "visit", "call", "plan", "play", "run", "report"]
_NOUNS = ["car", "city", "team", "letter", "house", "game", "deal", "story", "road"]
_PAST_VERBS = ["bought", "sold", "visited", "called", "found", "liked", "signed", "sent"]
_INTRANSITIVE = ["traveled", "moved", "returned", "walked"]
_BASE_VERBS = ["buy", "sell", "find", "like", "sign", "send"]
_AUXES = ["will", "can", "should"]
_SUBJ_PRONOUNS = ["he", "she", "they", "we"]
_PLURAL_PRONOUNS = ["they", "we", "you"]
_LOC_PREPS = ["in", "to", "from", "near"]
_ADVS = ["today", "yesterday", "again", "quickly"]
_DAYS = ["Monday", "Tuesday", "Friday"]
_MONTHS = ["January", "March", "October"]
_TITLES = ["Mr.", "Ms.", "Dr."]
_FIRST_NAMES = ["John", "Mary", "Ahmed", "Sofia", "Li", "Anna", "Jordan", "Paris"]
_LAST_NAMES = ["Smith", "Garcia", "Chen", "Okafor", "Washington", "Lincoln", "Jordan"]
_PLACES = ["London", "Berlin", "Kenya", "Texas", "Paris", "Jordan", "Washington", "Lincoln"]
_PLACE_PREFIXES = ["New", "San", "Port"]
_ORG_SUFFIXES = ["Bank", "Group", "Inc.", "University", "Airlines", "Motors"]
_SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]


class _Sentence:
    def __init__(self):
        self.words, self.pos, self.ner = [], [], []

    def add(self, word, pos, ner="O"):
        self.words.append(word)
        self.pos.append(pos)
        self.ner.append(ner)

    def entity(self, words, kind):
        for k, word in enumerate(words):
            self.add(word, "PROPN", ("B-" if k == 0 else "I-") + kind)


class _Grammar:
    def __init__(self, rng: random.Random, oov_rate: float):
        self.rng = rng
        self.oov_rate = oov_rate

    def pick(self, words):
        return words[self.rng.randrange(len(words))]

    def name(self, words):
        if self.rng.random() < self.oov_rate:
            n = self.rng.randint(2, 3)
            return "".join(self.pick(_SYLLABLES) for _ in range(n)).capitalize()
        return self.pick(words)

    def person(self, s):
        r = self.rng.random()
        if r < 0.2:
            s.add(self.pick(_TITLES), "PROPN")  # a title is not part of the name
            s.entity([self.name(_LAST_NAMES)], "PER")
        elif r < 0.6:
            s.entity([self.name(_FIRST_NAMES), self.name(_LAST_NAMES)], "PER")
        else:
            s.entity([self.name(_FIRST_NAMES)], "PER")

    def place(self, s):
        if self.rng.random() < 0.25:
            s.entity([self.pick(_PLACE_PREFIXES), self.name(_PLACES)], "LOC")
        else:
            s.entity([self.name(_PLACES)], "LOC")

    def organisation(self, s):
        if self.rng.random() < 0.3:
            s.add("the", "DET")
        words = [self.name(_LAST_NAMES + _PLACES)]
        if self.rng.random() < 0.3:
            words.append(self.name(_LAST_NAMES))
        s.entity([*words, self.pick(_ORG_SUFFIXES)], "ORG")

    def noun_phrase(self, s, plural_ok=True):
        if plural_ok and self.rng.random() < 0.15:
            s.add(str(self.rng.randint(2, 99)), "NUM")
            s.add(self.pick(_NOUNS + _AMBIGUOUS) + "s", "NOUN")
            return
        s.add(self.pick(_DETS), "DET")
        if self.rng.random() < 0.4:
            s.add(self.pick(_ADJS), "ADJ")
        s.add(self.pick(_NOUNS + _AMBIGUOUS), "NOUN")

    def subject(self, s):
        r = self.rng.random()
        if r < 0.35:
            self.person(s)
        elif r < 0.5:
            self.organisation(s)
        elif r < 0.75:
            self.noun_phrase(s, plural_ok=False)
        else:
            s.add(self.pick(_SUBJ_PRONOUNS), "PRON")

    def object(self, s):
        r = self.rng.random()
        if r < 0.25:
            self.person(s)
        elif r < 0.4:
            self.organisation(s)
        else:
            self.noun_phrase(s)

    def modifier(self, s):
        r = self.rng.random()
        if r < 0.45:
            s.add(self.pick(_LOC_PREPS), "ADP")
            self.place(s)
        elif r < 0.6:
            s.add("on", "ADP")
            s.add(self.pick(_DAYS), "PROPN")  # a PROPN outside any entity
        elif r < 0.7:
            s.add("in", "ADP")
            s.add(self.pick(_MONTHS), "PROPN")  # `in` + PROPN, yet not a place
        elif r < 0.85:
            s.add("with", "ADP")
            self.person(s)
        else:
            s.add("for", "ADP")
            self.organisation(s)

    def sentence(self) -> _Sentence:
        s = _Sentence()
        r = self.rng.random()
        if r < 0.1:
            s.add(self.pick(_ADVS).capitalize(), "ADV")
            s.add(",", "PUNCT")
        template = self.rng.random()
        intransitive = 0.7 <= template < 0.85
        if template < 0.35:  # SUBJ VERB OBJ [MOD]
            self.subject(s)
            s.add(self.pick(_PAST_VERBS), "VERB")
            self.object(s)
        elif template < 0.55:  # SUBJ AUX VERB OBJ: ambiguous words are verbs
            self.subject(s)
            s.add(self.pick(_AUXES), "AUX")
            s.add(self.pick(_BASE_VERBS + _AMBIGUOUS), "VERB")
            self.object(s)
        elif template < 0.7:  # PRON-PL VERB OBJ, present tense
            s.add(self.pick(_PLURAL_PRONOUNS), "PRON")
            s.add(self.pick(_BASE_VERBS + _AMBIGUOUS), "VERB")
            self.object(s)
        elif intransitive:  # SUBJ VERB-INTRANS MOD
            self.subject(s)
            s.add(self.pick(_INTRANSITIVE), "VERB")
        else:  # PER said that SUBJ VERB OBJ
            self.person(s)
            s.add("said", "VERB")
            s.add("that", "SCONJ")
            self.subject(s)
            s.add(self.pick(_PAST_VERBS), "VERB")
            self.object(s)
        if intransitive or self.rng.random() < 0.5:
            self.modifier(s)
        if self.rng.random() < 0.2:
            s.add("and", "CCONJ")
            s.add(self.pick(_PAST_VERBS), "VERB")
            self.object(s)
        s.add(".", "PUNCT")
        first = s.words[0]
        s.words[0] = first[0].upper() + first[1:]
        return s


def synthetic_tagged_corpus(
    num_sentences: int = 1000,
    seed: int = 0,
    missing_ner_rate: float = 0.0,
    missing_pos_rate: float = 0.0,
    oov_rate: float = 0.1,
) -> TaggedCorpus:
    """Generates a POS + NER corpus with tasks `"pos"` (UPOS) and `"ner"` (IOB2).

    Args:
        num_sentences: int >= 1. Number of sentences (4 to about 26 tokens,
            typically 6 to 12).
        seed: int. The same arguments give the same corpus; different seeds
            give different sentences of the same grammar (use one seed per
            split).
        missing_ner_rate: float in [0, 1). Share of sentences whose NER labels
            are missing (`None`). Defaults to 0.
        missing_pos_rate: float in [0, 1). Same for POS. Defaults to 0.
        oov_rate: float in [0, 1]. Probability that a name slot gets a made-up
            name (almost always unseen elsewhere). Defaults to 0.1.

    Returns:
        `TaggedCorpus` with ids `synthetic-<seed>-<index>`. Its tag
        vocabularies are `synthetic_tag_vocabularies()`.

    Examples:

    >>> corpus = synthetic_tagged_corpus(3, seed=1)
    >>> len(corpus), corpus.tasks
    (3, ['pos', 'ner'])
    """
    if num_sentences < 1:
        raise ValueError(
            "Invalid value for argument `num_sentences`. Expected an int >= 1. "
            f"Received: num_sentences={num_sentences}"
        )
    for name, rate in [("missing_ner_rate", missing_ner_rate), ("missing_pos_rate", missing_pos_rate)]:
        if not 0.0 <= rate < 1.0:
            raise ValueError(
                f"Invalid value for argument `{name}`. Expected a float in "
                f"[0, 1). Received: {name}={rate}"
            )
    if not 0.0 <= oov_rate <= 1.0:
        raise ValueError(
            "Invalid value for argument `oov_rate`. Expected a float in [0, 1]. "
            f"Received: oov_rate={oov_rate}"
        )
    grammar = _Grammar(random.Random(seed), oov_rate)
    # Missingness has its own stream, so the sentences of a seed do not
    # change with the missing rates.
    missing = random.Random(f"missing-{seed}")
    tokens, pos, ner = [], [], []
    for _ in range(num_sentences):
        s = grammar.sentence()
        tokens.append(s.words)
        pos.append(None if missing.random() < missing_pos_rate else s.pos)
        ner.append(None if missing.random() < missing_ner_rate else s.ner)
    ids = [f"synthetic-{seed}-{i}" for i in range(num_sentences)]
    return TaggedCorpus(tokens, {"pos": pos, "ner": ner}, ids)


def synthetic_tag_vocabularies() -> dict[str, list[str]]:
    """Tag vocabularies of `synthetic_tagged_corpus` (the order
    `tag_vocabulary` gives: sorted, `O` first)."""
    return {"pos": list(POS_TAGS), "ner": list(NER_TAGS)}
