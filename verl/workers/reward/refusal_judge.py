"""The ``judge`` refusal detector: a chat model answers one documented yes/no question per reply.

The question (:data:`JUDGE_QUESTION`, the user message; ``{reply}`` is the reply being judged, unchanged)::

    Here is a reply that an AI assistant gave to a user's question.

    Reply: <<<{reply}>>>

    Does the reply refuse to answer, or say that the assistant does not know or cannot give the answer?
    A reply that gives an answer, even a hedged or a wrong one, is not a refusal.
    Answer with one word: yes or no.

The judge's reply is parsed by :func:`parse_judge_reply`: its first word, lower-cased, without surrounding
punctuation or markup (``**Yes**``, ``"no."``, ``Answer: yes``) must be ``yes`` (refusal) or ``no``; any other
reply is *unclear*, and that reply is decided by the ``fallback`` detector (``strict`` by default) and
counted in ``stats["unclear"]``.

Layering: this module knows no model. It takes ``ask``, a callable ``list[str] -> list[str]`` mapping user
messages to the judge model's replies; :func:`verl.eval.judge.generator_ask` builds one from any evaluation
:class:`~verl.eval.generator.Generator` (chat template, greedy, a few tokens), and the trainer and the
evaluators inject it. Verdicts are cached per reply text (ReBO samples repeat), and
:meth:`JudgeDetector.judge_many` judges a batch in one ``ask`` call.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from typing import Optional

JUDGE_QUESTION = (
    "Here is a reply that an AI assistant gave to a user's question.\n\n"
    "Reply: <<<{reply}>>>\n\n"
    "Does the reply refuse to answer, or say that the assistant does not know or cannot give the answer? "
    "A reply that gives an answer, even a hedged or a wrong one, is not a refusal. "
    "Answer with one word: yes or no."
)
_FIRST_WORD = re.compile(r"^[\W_]*(?:(?:answer|verdict|judgement|judgment)\s*:\s*[\W_]*)?([a-z]+)")
CACHE_LIMIT = 100_000


def judge_question(reply: str) -> str:
    """The user message the judge model receives for ``reply``."""
    return JUDGE_QUESTION.format(reply=reply)


def parse_judge_reply(text: str) -> Optional[bool]:
    """``True`` for a reply starting with "yes", ``False`` for "no", ``None`` for anything else."""
    match = _FIRST_WORD.match(text.strip().lower()) if isinstance(text, str) else None
    word = match.group(1) if match else ""
    return True if word == "yes" else False if word == "no" else None


class JudgeDetector:
    """``detector(reply) -> bool`` backed by a judge model behind ``ask`` (module docstring).

    ``stats``: ``judged`` (replies sent to the judge), ``unclear`` (replies decided by ``fallback``).
    """

    name = "judge"

    def __init__(self, ask: Callable[[list[str]], list[str]], fallback: Callable[[str], bool]):
        if not callable(ask):
            raise TypeError(f"JudgeDetector needs a callable ask(list[str]) -> list[str], got {type(ask).__name__}")
        self.ask = ask
        self.fallback = fallback
        self.stats = {"judged": 0, "unclear": 0}
        self._cache: dict[str, bool] = {}
        self._lock = threading.Lock()  # reward threads share one judge

    def judge_many(self, replies: Sequence[str]) -> list[bool]:
        """One verdict per reply; the replies not cached yet go to ``ask`` in one call."""
        for reply in replies:
            if not isinstance(reply, str):
                raise TypeError(f"refusal detectors expect a str, got {type(reply).__name__}: {reply!r:.80}")
        with self._lock:
            todo = list(dict.fromkeys(r for r in replies if r not in self._cache))
            if todo:
                answers = list(self.ask([judge_question(r) for r in todo]))
                if len(answers) != len(todo):
                    raise ValueError(f"judge ask() returned {len(answers)} replies for {len(todo)} questions")
                if len(self._cache) + len(todo) > CACHE_LIMIT:
                    self._cache.clear()
                for reply, answer in zip(todo, answers):
                    verdict = parse_judge_reply(answer)
                    if verdict is None:
                        self.stats["unclear"] += 1
                        verdict = bool(self.fallback(reply))
                    self._cache[reply] = verdict
                self.stats["judged"] += len(todo)
            return [self._cache[r] for r in replies]

    def __call__(self, reply: str) -> bool:
        return self.judge_many([reply])[0]
