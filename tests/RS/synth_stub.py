"""A model-free generator for the synth stage's tests (``synthesis.plugin: tests.RS.synth_stub:factory``).

It answers each synthesis template with a fixed, well-formed reply about a made-up entity and honours the
``generate_fn`` contract of :mod:`data.generators` (prefixes continued, the continuation returned), so every
priming mode parses. A neighbour question of odd length names the target, which the ``mentions_target`` filter
must drop.
"""

from __future__ import annotations

import re

ENTITY = "Jane Doe"


def _target(prompt: str) -> str:
    found = re.findall(r"^Target: (.+)$", prompt, re.MULTILINE)
    return found[-1] if found else ""


def _question(prompt: str) -> str:
    return re.findall(r"^Question: (.+)$", prompt, re.MULTILINE)[-1]


def _about(question: str, target: str, entity: str) -> str:
    names = [n for n in (target, target.split()[-1] if target else "") if n]
    for name in names:
        question = question.replace(name, entity)
    return question if entity in question else f"{question} (about {entity})"


def reply(prompt: str) -> str:
    """The full reply a well-behaved generator would give to one synthesis prompt (a function of the prompt)."""
    question, target = _question(prompt), _target(prompt)
    if prompt.startswith("Rewrite the question"):
        return f"Statement: {question.rstrip('?')} is ___."
    if "Write a fill-in-the-blank sentence" in prompt:
        return f"Entity: {ENTITY}\nStatement: {ENTITY} is known for ___.\nAnswer: Paris"
    entity = target if len(question) % 2 else ENTITY
    return f"Entity: {entity}\nQuestion: {_about(question, target, entity)}\nAnswer: Paris"


def factory(synthesis):
    """(SynthesisConfig) -> generate_fn."""

    def generate(prompts, prefixes=None, stop=None):
        outputs = []
        for i, prompt in enumerate(prompts):
            full = reply(prompt)
            prefix = prefixes[i] if prefixes is not None else ""
            assert full.startswith(prefix), (prefix, full)
            outputs.append(full[len(prefix) :])
        return outputs

    return generate
