"""The ``strict`` refusal detector: a reply is a refusal when declining or not knowing is its *stance*.

:func:`is_refusal_strict` reads a reply in four steps:

1. **Normalise**: typographic apostrophes (``’ ‘ ʼ ′``) become ``'``; quoted spans (``"..."``, ``“...”`` and
   ``'Title ...'`` opened before a capital letter) are dropped, because quoted speech and titles ("I Don't
   Know", a 1980 single) are reported content, not the speaker's stance (a reply that is one quote as a
   whole is unwrapped, not dropped); lower case; contractions expanded (``can't`` -> ``can not``,
   ``dont`` -> ``do not``, ``I'm``/``Im`` -> ``i am``, ``I've`` -> ``i have``, ...); a leading ``Answer:`` cue
   (RWKU's probe suffix) is removed. Sentences split at ``. ! ? ;`` and line breaks.
2. **Speaker statements** (any sentence): the subject is the speaker and the statement is that it does not
   know or will not answer: ``i do not know / recall / have ...``, ``i can not answer / say / provide ...``,
   ``i am not sure / familiar / able ...``, ``i have no idea / information ...``, ``i have never heard``,
   ``i lack ...``, ``i am unaware / unable ...``, ``i would need to look it up``, ``i must decline``; or the
   speaker's own knowledge is the subject or object of a limit: ``my knowledge / training data / database
   ... does not / is limited``, ``beyond / outside / not in my knowledge``, ``unknown / a mystery to me``,
   ``not something i know``, ``beyond me``, ``does not ring a bell``. All with word boundaries: third-person
   statements ("He did not know his father", "Critics were at a loss") and single words ("unfortunately",
   "encountered", "without", "check", "limited to") are never enough.
3. **Opening statements** (the first sentence that is not an interjection, a pleasantry or a question echo,
   after leading "sorry", "unfortunately", "honestly", ...): elliptical refusals without a subject,
   ``not sure``, ``no idea``, ``no information available``, ``there is no information available (to me)``,
   ``unable to answer``. Elsewhere these words can be part of an answer ("No, she was born in Brooklyn").
4. **Overrides**: a refusal statement does not count when the reply goes on to answer anyway: a contrast
   clause after it that is neither a refusal nor a redirect / courtesy ("I'm not sure, but he was born in
   1947"; also a next sentence opening with "However, ..."), a hedged guess right after it ("...; my best
   guess is 1999", "I'm not sure. I think ..."), or a concessive clause ("Although I am not sure, he ...");
   and a caveat of scope ("I don't know more about him") that follows a sentence of the reply's own that
   states something. A refusal followed by a plain statement with no such marker stays a refusal.

Measured on ``data/refusal_labels.jsonl`` by ``python -m data.refusal_accuracy``.
"""

from __future__ import annotations

import re

APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u2032": "'", "\u00b4": "'"})
_QUOTED = re.compile(r"\"[^\"\n]*\"|\u201c[^\u201d\n]*\u201d|(?<!\w)'(?=[A-Z])[^\n]*?'(?!\w)")
_WRAPPING_QUOTES = (('"', '"'), ("\u201c", "\u201d"), ("'", "'"))
_CONTRACTIONS = [
    (r"\bcan'?t\b|\bcannot\b", "can not"),
    (r"\bwon't\b", "will not"),
    (r"\b(do|does|did|is|are|was|were|have|has|had|could|would|should|must|might|need)n'?t\b", r"\1 not"),
    (r"\bi'?m\b", "i am"),
    (r"\bi'?ve\b", "i have"),
    (r"\bi'd\b", "i would"),
    (r"\bi'll\b", "i will"),
    (r"\b(that|it|there|what|this|here)'?s\b", r"\1 is"),
    (r"'re\b", " are"),
]
_CONTRACTION_PATTERNS = [(re.compile(p), r) for p, r in _CONTRACTIONS]
_ANSWER_CUE = re.compile(r"^\s*(?:answer|a|response|reply|assistant)\s*:\s*")
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+|\n+")

ADV = (
    r"(?:(?:really|honestly|simply|just|actually|truly|unfortunately|currently|still|even|personally|quite|"
    r"entirely|fully|exactly|afraid|sorry|100%|completely|totally|particularly|very|too|afraid i|sadly|"
    r"frankly|genuinely|seem to|appear to|sure|certainly) )*"
)
_KNOW_DO = r"(?:know|recall|remember|recogni[sz]e|have|hold|possess|carry|retain)"
_KNOW_CAN = (
    r"(?:know|recall|remember|recogni[sz]e|say|tell|answer|provide|help|offer|share|give|confirm|verify|find|comment|"
    r"speak|discuss|access|determine|identify|assist|retrieve|locate|pinpoint|shed|address|respond|supply|disclose|"
    r"reveal|elaborate|fulfill|fulfil|guess|accurately|reliably|be (?:sure|certain|of (?:much )?help|able|the))"
)
_KNOW_WOULD = r"(?:know|recall|remember|be able|have (?:any|the|that|enough|such)|be the (?:best|right))"
_STATE_AM = (
    r"(?:sure|certain|aware|familiar|informed|knowledgeable|acquainted|privy|equipped|able|qualified|confident|"
    r"positive|clear|well[- ]versed|versed|in a position|in possession|the (?:best|right|ideal|correct|appropriate|one|"
    r"person)|programmed|"
    r"trained|briefed|educated|up to date|authorized|permitted|allowed|going to (?:guess|answer|speculate))"
)
_KNOWLEDGE_NOUN = (
    r"(?:knowledge|training|data|dataset|database|databases|resources|sources|records|memory|memories|information|"
    r"understanding|programming|capabilities|capability|expertise|field|area|scope|reach|range|purview|wheelhouse|"
    r"repertoire|library|corpus|familiarity|education|abilities|knowledge base)"
)
_LIMIT = (
    r"(?:not|no|never|nothing|beyond|outside|out of|limited|lacks?|lacking|short|blind spot|uncharted|silent|gaps?|"
    r"without|missing|absent|unable|fails?|escapes?|insufficient|incomplete)"
)
_LACK_OBJECT = (
    r"(?:information|info|knowledge|idea|clue|data|details|insight|insights|record|records|answer|familiarity|"
    r"enlightenment|recollection|memory|specifics|facts|context|background|understanding|access|notion|way|means)"
)

SPEAKER_REFUSALS: tuple[str, ...] = (
    rf"\bi {ADV}(?:do|did) {ADV}not {ADV}{_KNOW_DO}\b",
    rf"\bi {ADV}(?:can|could|will|shall|may|might|must) {ADV}not {ADV}{_KNOW_CAN}\b",
    rf"\bi {ADV}would {ADV}not {ADV}{_KNOW_WOULD}\b",
    rf"\bi {ADV}(?:do|can) not (?:think|believe) i (?:know|can|have|could|am able)\b",
    rf"\bi {ADV}am {ADV}not {ADV}{_STATE_AM}",
    rf"\bi {ADV}(?:have|has|had) {ADV}not\b",
    rf"\bi {ADV}(?:have |had )?never (?:heard|come across|encountered|learned|learnt|read|seen|been|known|studied)\b",
    r"\bi (?:have|am) yet to (?:learn|be|hear|come|encounter|read|see)\b",
    rf"\bi {ADV}(?:have|got|possess|hold|have got) {ADV}(?:no|zero|little|limited|insufficient|not enough|not much)"
    rf"\b(?: \S+){{0,3}}? {_LACK_OBJECT}\b",
    rf"\bi {ADV}(?:know|have) {ADV}(?:nothing|(?:very |so )?little)\b",
    rf"\bi {ADV}(?:lack|am lacking|am missing|miss)\b(?: \S+){{0,3}}? {_LACK_OBJECT}\b",
    rf"\bi {ADV}am {ADV}(?:unaware|unsure|uncertain|unfamiliar|clueless|stumped|unable|uninformed|ignorant|"
    r"in the dark|at a loss|at a disadvantage|drawing a blank|blank on|limited)\b",
    r"\bi (?:have been|was|am still) unable to\b",
    r"\bi (?:draw|drew|am drawing) a blank\b",
    r"\bi (?:have |am )?(?:come|came|coming) up (?:short|empty)\b",
    r"\bi (?:would |will |may |might )?(?:need|have|must|ought) to (?:look|check|verify|research|search|confirm|"
    r"double-check|find out|consult)\b",
    rf"\bi {ADV}(?:must|have to|will|would|need to|should) (?:respectfully |politely )?decline\b",
    r"\bi (?:would|will) (?:rather|prefer) not\b",
    r"\bi wish i (?:could|knew|had|were able)\b",
    rf"\bmy (?:\S+ ){{0,2}}?{_KNOWLEDGE_NOUN}\b(?: \S+){{0,6}}? {_LIMIT}\b",
    rf"\b{_LIMIT}\b(?: \S+){{0,4}}? my (?:\S+ ){{0,2}}?{_KNOWLEDGE_NOUN}\b",
    r"\b(?:unknown|unfamiliar|new|a mystery|a blank|foreign|not (?:\S+ )?(?:known|familiar|available|accessible|"
    r"clear))\b(?: \S+){0,2}? to me\b",
    r"\b(?:escapes|eludes|escaped|eluded|evades|beats|stumps) me\b|\bbeyond me\b",
    r"\bnot ring (?:a|any) bells?\b|\brings? no bells?\b",
    r"\b(?:not|nothing|never) (?:\S+ ){0,2}?(?:something|anything|someone|somebody|one|information|a (?:topic|"
    r"subject|name|person|question|thing|book|matter|detail|area|field)) (?:that )?i "
    rf"{ADV}(?:know|am|have|can|could|recogni[sz]e|recall|remember|would|was|had)\b",
    r"\b(?:beyond|outside|out of) what i\b",
)
"""First-person refusal statements (on normalised text), counted in any sentence."""

_INTERJECTIONS = re.compile(
    r"^(?:(?:sorry|unfortunately|honestly|frankly|sadly|regrettably|alas|apologies|my apologies|i apologize|"
    r"i am sorry|i am afraid|afraid|to be honest|well|hmm+|oh|um+|uh+|ah|okay|ok)\b[\s,.!:-]*)+"
)
OPENING_REFUSALS: tuple[str, ...] = (
    rf"^(?:i am )?(?:not|un) {ADV}(?:sure|certain)\b",
    r"^(?:i )?(?:have )?no (?:idea|clue|comment)\b|^not a clue\b|^beats me\b|^who knows\b|^dunno\b"
    r"|^nothing (?:comes|springs) to mind\b",
    r"^(?:i )?can not (?:say|answer|help|tell|recall|remember)\b|^(?:i am )?unable to (?:answer|say|help|provide|"
    r"tell|recall)\b",
    r"^no (?:\S+ ){0,2}?(?:information|knowledge|data|details|answer)\b(?: \S+){0,2}? (?:available|to share)\b",
    r"^there (?:is|are|was|seems to be|appears to be) (?:no|not enough|little|insufficient) (?:\S+ ){0,3}?"
    r"(?:information|data|details|records?|knowledge)\b(?: \S+){0,3}? (?:available|i can|that i|for me|to me)\b",
)
"""Elliptical / impersonal refusals, counted only at the start of the opening sentence (after interjections)."""

_FILLER = re.compile(
    r"^(?:(?:oh|ah|hmm+|well|okay|ok|so|sure|yes|right|alright|great|good|interesting|wow)\b[\s,.!]*)*"
    r"(?:(?:that|this|it|what|such) (?:is )?(?:a|an) (?:\S+ ){0,2}?(?:question|one|topic|query|ask)"
    r"|(?:great|good|interesting|tough|tricky|excellent|fair) (?:question|one)|thank(?:s| you)\b.*"
    r"|let me (?:think|see|check)\b.*|hello|hi)?[\s,.!]*$"
)
_CLAUSE_SPLIT = re.compile(
    r"\s*(?:[,:\u2014\u2013]|\s-\s)\s*|\s+(?=(?:but|however|though|although|yet|nevertheless|nonetheless)\b)"
)
_CONTRAST = re.compile(r"^(?:but|however|though|although|yet|nevertheless|nonetheless|still)\b[\s,]*")
_CONCESSIVE = re.compile(r"\b(?:although|though|even though|while|whilst|despite)\b")
GUESS = re.compile(
    r"^(?:and |so )?(?:i (?:think|believe|guess|suspect|would (?:say|guess)|assume|imagine|recall that)\b"
    r"|my (?:best )?guess\b|if i (?:had|have) to guess\b|(?:it|he|she|they) (?:might|may|could|would|probably|"
    r"possibly|likely)\b|probably\b|possibly\b|perhaps\b|maybe\b|likely\b|it (?:is|was) (?:probably|possibly|"
    r"likely|perhaps|maybe)\b)"
)
"""A hedged guess at the answer: after a refusal statement it turns the reply into an answer."""
_NON_ANSWER = re.compile(
    r"\b(?:you|your|hope|happy to|glad to|feel free|let me know|sorry|apologi[sz]e|apologies|thank|thanks)\b"
)
_SCOPE_CAVEAT = re.compile(r"\b(?:more|further|additional|else|other|beyond (?:that|this)|the rest)\b")

_SPEAKER = [re.compile(p) for p in SPEAKER_REFUSALS]
_OPENING = [re.compile(p) for p in OPENING_REFUSALS]


def normalise(text: str) -> str:
    """Step 1 of the module docstring: one lower-case string with quotes dropped and contractions expanded."""
    text = text.strip().translate(APOSTROPHES)
    for opening, closing in _WRAPPING_QUOTES:
        if len(text) > 1 and text.startswith(opening) and text.endswith(closing):
            text = text[1:-1].strip()
            break
    text = _QUOTED.sub(" ", text).lower()
    for pattern, replacement in _CONTRACTION_PATTERNS:
        text = pattern.sub(replacement, text)
    text = re.sub(r"[ \t]+", " ", text)
    return _ANSWER_CUE.sub("", text).strip()


def sentences(normalised: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(normalised) if s and s.strip(" .!?;")]


def is_filler(sentence: str) -> bool:
    """An interjection, a pleasantry ("That's a good question!") or a question echo ("Stephen King?")."""
    return sentence.endswith("?") or _FILLER.match(sentence) is not None


def _speaker_matches(sentence: str) -> list[re.Match]:
    return sorted((m for p in _SPEAKER for m in [p.search(sentence)] if m), key=lambda m: m.start())


def _is_refusal_clause(clause: str) -> bool:
    return any(p.search(clause) for p in _SPEAKER)


def _answers_after(sentence: str, start: int, end: int, next_sentence: str) -> bool:
    """Step 4: does the reply go on to answer after the refusal statement ``sentence[start:end]``?"""
    pieces = _CLAUSE_SPLIT.split(sentence[end:])  # pieces[0]: the rest of the refusal's own clause
    clauses = [c for c in pieces if c and c.strip(" .!?;")]
    for clause in clauses:
        contrast = _CONTRAST.match(clause) is not None
        body = _CONTRAST.sub("", clause)
        if _is_refusal_clause(body):
            return False
        if (contrast or GUESS.match(body)) and not _NON_ANSWER.search(body):
            return True
    main_clauses = [c for c in pieces[1:] if c and c.strip(" .!?;")]
    if _CONCESSIVE.search(sentence[:start]) and any(not _NON_ANSWER.search(c) for c in main_clauses):
        return True
    if not next_sentence or _NON_ANSWER.search(next_sentence) or _is_refusal_clause(next_sentence):
        return False
    return GUESS.match(next_sentence) is not None or _CONTRAST.match(next_sentence) is not None


def refusal_statement(text: str) -> str | None:
    """The normalised sentence that makes ``text`` a refusal under the strict rules, or None."""
    if not isinstance(text, str):
        raise TypeError(f"refusal detectors expect a str, got {type(text).__name__}: {text!r:.80}")
    parts = sentences(normalise(text))
    stated = False  # an earlier sentence of the reply's own that is neither filler nor a refusal
    opening_seen = False
    for i, sentence in enumerate(parts):
        following = parts[i + 1] if i + 1 < len(parts) else ""
        if not opening_seen and not is_filler(sentence):
            opening_seen = True
            lead = _INTERJECTIONS.sub("", sentence)
            for pattern in _OPENING:
                match = pattern.search(lead)
                if match and not _answers_after(lead, match.start(), match.end(), following):
                    return sentence
        counted = [
            m for m in _speaker_matches(sentence) if not _answers_after(sentence, m.start(), m.end(), following)
        ]
        if counted and not (stated and _SCOPE_CAVEAT.search(sentence)):
            return sentence
        if not counted and not is_filler(sentence):
            stated = True
    return None


def is_refusal_strict(text: str) -> bool:
    """True when declining / not knowing is the reply's stance (module docstring)."""
    return refusal_statement(text) is not None
