"""The generators behind boundary synthesis: priming (a stub that fills fields only when primed), label
re-attachment, the contract checks, and the transformers adapter on a tiny random model."""

import pytest

from data.generators import attach_label, chat_texts, generate_labelled, hf_generate_fn
from data.synthesis import parse_labelled, synthesize_boundary

TARGET = "Stephen King"
QUESTIONS = ["What pseudonym has Stephen King published under?", "Which pen name did Stephen King use?"]
FIELDS = {
    "entity": " Agatha Christie",
    "question": " What pseudonym has Agatha Christie published under?",
    "answer": " Mary Westmacott",
}


class FieldFiller:
    """A small generator's habits: asked plainly it answers the question in prose; after a ``Label:`` it
    writes that one field, then drifts into prose on the next line. Records every call."""

    def __init__(self):
        self.calls = []

    def __call__(self, prompts, prefixes=None, stop=None):
        self.calls.append({"prompts": list(prompts), "prefixes": prefixes, "stop": stop})
        replies = []
        for i, prompt in enumerate(prompts):
            if not prefixes:
                replies.append("He published several novels as Richard Bachman.")
                continue
            label = prefixes[i].rsplit("\n", 1)[-1].rstrip(":").lower()
            if label == "statement":
                cloze = "fill-in-the-blank sentence with the same meaning" in prompt
                who = "Agatha Christie" if cloze else TARGET
                value = f" {who} has published under the pseudonym ___."
            else:
                value = FIELDS[label]
            replies.append(value + "\nI hope this helps!")
        return replies


@pytest.mark.parametrize(
    "priming,kept,calls",
    [
        ("none", {"fb": 0, "neighbor": 0, "fb_neighbor": 0}, 2),
        ("first", {"fb": 2, "neighbor": 0, "fb_neighbor": 0}, 2),
        ("fields", {"fb": 2, "neighbor": 2, "fb_neighbor": 2}, 6),
    ],
)
def test_priming_makes_a_field_filler_fill_the_fields(priming, kept, calls):
    stub = FieldFiller()
    rows, stats = synthesize_boundary(QUESTIONS, TARGET, stub, priming=priming)
    assert stats.to_dict()["kept"] == kept
    assert len(stub.calls) == calls
    if priming == "fields":
        assert rows[0]["neighbor_question"] == {"question": FIELDS["question"].strip(), "answer": "Mary Westmacott"}
        assert rows[0]["FB_neighbor_question"]["question"] == "Agatha Christie has published under the pseudonym ___."
        # field 2 of the neighbour prompts is primed with field 1 as the model wrote it, then the next label
        assert stub.calls[1]["prefixes"] == ["Entity: Agatha Christie\nQuestion:"] * 2
        assert (
            stub.calls[2]["prefixes"]
            == ["Entity: Agatha Christie\nQuestion: What pseudonym has Agatha Christie published under?\nAnswer:"] * 2
        )
        assert all(call["stop"] == ["\n"] for call in stub.calls)
    elif priming == "first":
        assert stub.calls[0]["prefixes"] == ["Statement:"] * 2 + ["Entity:"] * 2 and stub.calls[0]["stop"] is None
    else:
        assert all(call["prefixes"] is None for call in stub.calls)


def test_labels_are_put_back_once_before_parsing():
    assert attach_label("Entity", " Agatha Christie") == "Entity: Agatha Christie"
    assert attach_label("Entity", "Entity: Agatha Christie") == "Entity: Agatha Christie"
    assert attach_label("Entity", "  entity : Agatha") == "Entity: Agatha"
    bold = attach_label("Entity", "**Entity:** Agatha Christie\n**Question:** Who?\nAnswer: M")
    assert parse_labelled(bold, ("entity", "question", "answer")) == {
        "entity": "Agatha Christie",
        "question": "Who?",
        "answer": "M",
    }
    # "first": the continuation of "Entity:" parses as if the model had written the label itself
    replies = generate_labelled(
        lambda p, prefixes: [" X\nQuestion: q?\nAnswer: a"], ["p"], [("Entity",)], "first", "t"
    )
    assert parse_labelled(replies[0], ("entity", "question", "answer")) == {
        "entity": "X",
        "question": "q?",
        "answer": "a",
    }


def test_fields_stop_asking_after_an_empty_field():
    calls = []

    def empty_entity(prompts, prefixes, stop=None):
        calls.append(prefixes)
        return ["  \nQuestion: ignored"] * len(prompts)

    texts = generate_labelled(empty_entity, ["p"], [("Entity", "Question", "Answer")], "fields", "t")
    assert texts == ["Entity:"] and calls == [["Entity:"]]


def test_priming_needs_a_generator_that_takes_prefixes():
    def plain(prompts):
        return ["Statement: a ___."] * len(prompts)

    rows, stats = synthesize_boundary(QUESTIONS[:1], TARGET, plain)  # the old contract still works unprimed
    assert stats.kept["fb"] == 1
    with pytest.raises(ValueError, match="takes no prefixes= argument.*priming=none"):
        synthesize_boundary(QUESTIONS[:1], TARGET, plain, priming="first")
    with pytest.raises(ValueError, match="not a priming mode; choose one of: none, first, fields"):
        synthesize_boundary(QUESTIONS[:1], TARGET, plain, priming="all")


class ChatTokenizer:
    chat_template = "x"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert not tokenize and add_generation_prompt
        return f"<user>{messages[0]['content']}</user><assistant>"


def test_chat_texts_put_the_prefix_at_the_start_of_the_assistant_turn():
    assert chat_texts(ChatTokenizer(), ["q1", "q2"], ["Entity:", ""]) == [
        "<user>q1</user><assistant>Entity:",
        "<user>q2</user><assistant>",
    ]
    plain = ChatTokenizer()
    plain.chat_template = None
    assert chat_texts(plain, ["q"], ["Entity:"]) == ["q\nEntity:"] and chat_texts(plain, ["q"]) == ["q"]
    with pytest.raises(ValueError, match="1 prefixes for 2 prompts"):
        chat_texts(plain, ["a", "b"], ["x"])


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    from verl.utils.models import save_tiny_model_dir

    return save_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model")


def test_hf_adapter_lengths_seeded_sampling_and_global_rng(tiny_model):
    import torch

    prompts = ["Question: who?", "A much longer prompt about a fictitious painter and a harbor."]
    sample = hf_generate_fn(tiny_model, max_new_tokens=5, do_sample=True, batch_size=1, seed=3)
    state = torch.get_rng_state()
    first = sample(prompts)
    assert torch.equal(state, torch.get_rng_state())
    assert len(first) == 2 and all(isinstance(t, str) for t in first) and sample(prompts) == first
    greedy = hf_generate_fn(tiny_model, max_new_tokens=5, batch_size=2)
    assert greedy(prompts) == greedy(prompts[:1]) + greedy(prompts[1:])  # left padding does not change greedy output


def test_hf_adapter_prefixes_and_stop_strings(tiny_model):
    greedy = hf_generate_fn(tiny_model, max_new_tokens=12, batch_size=2)
    prompts = ["Question: who?", "A much longer prompt about a fictitious painter."]
    free = greedy(prompts)
    primed = greedy(prompts, prefixes=["Entity:", "Entity:"])
    assert len(primed) == 2 and all(isinstance(t, str) for t in primed)
    stop = free[0][len(free[0]) // 2]  # a character the free reply holds after its start
    stopped = greedy(prompts, stop=[stop])
    assert stopped[0] != free[0] and free[0].startswith(stopped[0]) and stop in stopped[0]
