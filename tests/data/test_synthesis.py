"""Boundary synthesis: parsing, filters and stats with a stub generator; the synthesised rows checked against
RULE's real schema and against the RULE reward (RULE's files themselves: tests/data/test_rebo_rows.py)."""

import json
from pathlib import Path

import pytest

from data.embedded import write_embedded_benchmark
from data.rebo_rows import flatten_rebo_rows
from data.synthesis import (
    FB_NEIGHBOR_PROMPT,
    FB_PROMPT,
    NEIGHBOR_PROMPT,
    REFUSAL_TEMPLATES,
    build_rebo_files,
    main,
    mentions_target,
    parse_labelled,
    reject_target_rows,
    synthesize_boundary,
)
from verl.workers.reward.functions import forget_two_stage_abs_target
from verl.workers.reward.refusal import is_refusal

TARGET = "Stephen King"
QUESTIONS = [
    "What pseudonym has Stephen King published under?",
    "Which novel was Stephen King's debut?",
    "Where was Stephen King born?",
    "Who co-wrote The Talisman with Stephen King?",
    "What award did Stephen King receive in 2014?",
]
# question index -> canned replies for the three prompt kinds
CANNED = {
    0: {
        "fb": "Statement: Stephen King has published under the pseudonym ___.",
        "neighbor": "Entity: Agatha Christie\nQuestion: What pseudonym has Agatha Christie published under?\n"
        "Answer: Mary Westmacott",
        "fb_neighbor": "**Entity:** Ruth Rendell\n**Statement:** Ruth Rendell published under the pseudonym ____.\n"
        '**Answer:** "Barbara Vine"',
    },
    1: {
        "fb": "Statement: Stephen King's debut novel was Carrie.",  # no blank
        "neighbor": "Entity: Dean Koontz\nQuestion: Which novel was Dean Koontz's debut?\n"
        "Answer: Star Quest, written like Stephen King's Carrie",  # names the target
        "fb_neighbor": "Entity: Anne Rice\nStatement: Anne Rice's debut novel was ___.\nAnswer: Interview with the Vampire",
    },
    2: {
        "fb": "Sure! Stephen King was born in Portland.",  # unparseable
        "neighbor": "Entity: Dean Koontz\nQuestion: Where was Dean Koontz born?\nAnswer: I don't know.",  # refusal
        "fb_neighbor": "Entity: Anne Rice\nStatement: Anne Rice was born in New Orleans.\nAnswer: New Orleans",
    },
    3: {
        "fb": "- statement: The Talisman was co-written by Stephen King and ____.",
        "neighbor": "Entity: Neil Gaiman\nQuestion: Who co-wrote Good Omens with Neil Gaiman?",  # no answer
        "fb_neighbor": "Entity: Owen King\nStatement: Owen King co-wrote Sleeping Beauties with ___.\nAnswer: his father",
    },
    4: {
        "fb": "Statement: In 2014 Stephen King received the ___.",
        "neighbor": "Question: Which award did the target get?\nEntity: Toni Morrison\n"
        "Question: What award did Toni Morrison receive in 2012?\nAnswer:",  # echo before Entity; empty answer
        "fb_neighbor": "I cannot do that.",
    },
}
EXPECTED_STATS = {
    "questions": 5,
    "kept": {"fb": 3, "neighbor": 1, "fb_neighbor": 2},
    "filtered": {
        "fb": {"no_blank": 1, "unparseable": 1},
        "neighbor": {"empty_answer": 1, "mentions_target": 1, "refusal_answer": 1, "unparseable": 1},
        "fb_neighbor": {"mentions_target": 1, "no_blank": 1, "unparseable": 1},
    },
}


class StubGenerator:
    """Answers each prompt from CANNED by recognising its template and its question; records every call."""

    def __init__(self, canned=CANNED, questions=QUESTIONS, target=TARGET):
        self.canned, self.questions, self.target, self.calls = canned, questions, target, []
        self.prefixes = {kind: template.split("{")[0] for kind, template in
                         (("fb", FB_PROMPT), ("neighbor", NEIGHBOR_PROMPT), ("fb_neighbor", FB_NEIGHBOR_PROMPT))}  # fmt: skip

    def __call__(self, prompts):
        self.calls.append(list(prompts))
        replies = []
        for prompt in prompts:
            index = next(i for i, q in enumerate(self.questions) if prompt.endswith(f"Question: {q}"))
            kind = "fb" if prompt.startswith(self.prefixes["fb"]) else None
            if kind is None:
                kind = "fb_neighbor" if "fill-in-the-blank sentence with the same meaning" in prompt else "neighbor"
            replies.append(self.canned[index][kind])
        return replies


def test_parse_labelled_is_lenient_about_markup():
    text = 'Sure.\n**Entity:** Agatha Christie\n- question: "Who?"\n 1. ANSWER : Mary Westmacott.\nAnswer: other'
    assert parse_labelled(text, ("entity", "question", "answer")) == {
        "entity": "Agatha Christie",
        "question": "Who?",
        "answer": "Mary Westmacott.",
    }
    echoed = "Question: original?\nEntity: X\nQuestion: new?\nAnswer: a"
    assert parse_labelled(echoed, ("question",), start="entity") == {"question": "new?"}
    assert parse_labelled("Entity: X\nAnswer: a", ("entity", "question", "answer")) is None


def test_mentions_target_full_last_accent_and_word_boundaries():
    assert mentions_target("Like stephen king, he wrote horror.", TARGET)
    assert mentions_target("King's first novel", TARGET)
    assert not mentions_target("The Kingdom of Sweden", TARGET)
    assert mentions_target("Beyonce sang it", "Beyoncé")
    assert mentions_target("Harry's wife", "Prince Harry, Duke of Sussex")
    assert not mentions_target("The Duke of Edinburgh", "Prince Harry, Duke of Sussex")


def test_synthesis_keeps_and_filters_the_right_items():
    stub = StubGenerator()
    refusals = ["I'm not sure about Stephen King.", "I have no idea about Stephen King."]
    rows, stats = synthesize_boundary(QUESTIONS, TARGET, stub, refusals=refusals, intro="An author.")
    assert stats.to_dict() == EXPECTED_STATS
    assert len(stub.calls) == 2 and len(stub.calls[0]) == 10 and len(stub.calls[1]) == 5
    # the FB-neighbour prompt of question 0 asks to avoid the QA neighbour's entity; others only the target
    assert "(not Stephen King or Agatha Christie)" in stub.calls[1][0]
    assert "(not Stephen King)" in stub.calls[1][1]
    assert [r["instruction"] for r in rows] == QUESTIONS
    assert [r["output"] for r in rows] == [refusals[i % 2] for i in range(5)]
    assert rows[0] == {
        "input": "",
        "output": refusals[0],
        "subject": TARGET,
        "instruction": QUESTIONS[0],
        "intro": "An author.",
        "FB_instruction": "Stephen King has published under the pseudonym ___.",
        "neighbor_question": {
            "question": "What pseudonym has Agatha Christie published under?",
            "answer": "Mary Westmacott",
        },
        "FB_neighbor_question": {
            "question": "Ruth Rendell published under the pseudonym ___.",
            "answer": "Barbara Vine",
        },
    }
    assert rows[3]["FB_instruction"] == "The Talisman was co-written by Stephen King and ___."
    assert [sorted(k for k in r if k.startswith(("FB", "neighbor"))) for r in rows[1:]] == [
        ["FB_neighbor_question"],
        [],
        ["FB_instruction"],
        ["FB_instruction"],
    ]


def test_synthesized_rows_match_the_real_boundary_schema_and_flatten(shared_data):
    real = json.loads((shared_data / "rwku/Target/1_Stephen_King/reject_with_fb_neighbor_target.json").read_text())
    rows, _ = synthesize_boundary(QUESTIONS, TARGET, StubGenerator())
    assert set(rows[0]) == set(real[0])
    assert set(rows[0]["neighbor_question"]) == set(real[0]["neighbor_question"])
    flat = flatten_rebo_rows(rows, shuffle=False)
    # question 0 gives four rows, then 1: QA + FB-neighbour, 2: QA, 3: FB + QA, 4: FB + QA
    assert [r["solution"][0][1] for r in flat] == list("rrnn" + "rn" + "r" + "rr" + "rr")
    for row in flat:
        answer = "Mary Westmacott" if row["solution"][0] == "<normal>" else "I'm not sure about Stephen King."
        expected = 1.0 if row["solution"][0] == "<reject>" or answer == row["solution"][1] else 0.5
        assert forget_two_stage_abs_target(answer, row["solution"])["overall"] == expected


def test_boundary_ratio_shuffle_and_bad_rows():
    rows, _ = synthesize_boundary(QUESTIONS, TARGET, StubGenerator())
    full = flatten_rebo_rows(rows, seed=1)
    assert sorted(map(json.dumps, full)) == sorted(map(json.dumps, flatten_rebo_rows(rows, shuffle=False)))
    assert full == flatten_rebo_rows(rows, seed=1) and full != flatten_rebo_rows(rows, seed=2)
    n_forget = sum(r["solution"][0] == "<reject>" for r in full)  # 8 forget, 3 boundary rows exist
    assert [
        sum(r["solution"][0] == "<normal>" for r in flatten_rebo_rows(rows, boundary_ratio=x)) for x in (0, 0.25, 1)
    ] == [0, 2, 3]
    assert n_forget == 8
    with pytest.raises(ValueError, match="row 0 has no non-empty string 'output'"):
        flatten_rebo_rows([{"instruction": "q", "subject": "s"}])
    with pytest.raises(ValueError, match="boundary_ratio"):
        flatten_rebo_rows(rows, boundary_ratio=-1)


def test_generator_contract_is_checked():
    with pytest.raises(ValueError, match="returned 1 outputs for 10"):
        synthesize_boundary(QUESTIONS, TARGET, lambda prompts: ["x"])
    with pytest.raises(ValueError, match="question 1 is empty"):
        synthesize_boundary(["q", " "], TARGET, StubGenerator())


def test_reject_target_rows_from_rwkus_reject_json_name_the_target(shared_data, tmp_path):
    """A target without RULE's files: RS rows from RWKU's reject.json, each refusal naming the target."""
    folder = shared_data / "rwku/Target/1_Stephen_King"
    (tmp_path / "reject.json").write_bytes((folder / "reject.json").read_bytes())
    rows = reject_target_rows(tmp_path, limit=30)
    reject = json.loads((folder / "reject.json").read_text())
    assert [r["instruction"] for r in rows] == [r["instruction"] for r in reject[:30]]
    assert rows[0]["output"] == rows[len(REFUSAL_TEMPLATES)]["output"] == REFUSAL_TEMPLATES[0].format(name=TARGET)
    assert all(is_refusal(r["output"]) and TARGET in r["output"] and r["subject"] == TARGET for r in rows)
    assert set(rows[0]) == set(json.loads((folder / "reject_target.json").read_text())[0])
    assert len(reject_target_rows(tmp_path)) == len(reject)


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    return write_embedded_benchmark(tmp_path_factory.mktemp("bench") / "rwku", seed=0, n_targets=1)


def test_build_rebo_files_on_the_embedded_benchmark(bench, tmp_path):
    folder = next((bench / "Target").iterdir())
    questions = [r["instruction"] for r in json.loads((folder / "reject_target.json").read_text())][:3]
    name = json.loads((folder / "intro.json").read_text())[0]["target"]
    canned = {
        i: {
            "fb": f"Statement: {q.rstrip('?')} is ___.",
            "neighbor": f"Entity: Ada Vole\nQuestion: {q.replace(name, 'Ada Vole')}\nAnswer: Vole answer {i}",
            "fb_neighbor": f"Entity: {name}\nStatement: {name} ___\nAnswer: a",  # names the target -> filtered
        }
        for i, q in enumerate(questions)
    }
    stub = StubGenerator(canned, questions, name)
    stats = build_rebo_files(folder, tmp_path / "out", stub, limit=3, seed=0, settings={"generator": "stub"})
    assert stats["settings"] == {"priming": "none", "limit": 3, "boundary_ratio": None, "seed": 0, "generator": "stub"}
    assert stats["kept"] == {"fb": 3, "neighbor": 3, "fb_neighbor": 0}
    assert stats["filtered"]["fb_neighbor"] == {"mentions_target": 3}
    assert stats["train_rows"] == {"<reject>": 6, "<normal>": 3}
    written = {p.name: json.loads(p.read_text()) for p in (tmp_path / "out").iterdir()}
    assert set(written) == {
        "reject_with_fb_neighbor_target.json",
        "rl_rejection_with_fb_neighbor_target.json",
        "rl_rejection_eval_target.json",
        "synthesis_stats.json",
    }
    assert written["synthesis_stats.json"] == stats
    assert written["rl_rejection_eval_target.json"] == json.loads(
        (folder / "rl_rejection_eval_target.json").read_text()
    )
    refusals = [r["output"] for r in json.loads((folder / "reject_target.json").read_text())][:3]
    assert [r["output"] for r in written["reject_with_fb_neighbor_target.json"]] == refusals


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    from verl.utils.models import save_tiny_model_dir

    return save_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model")


def test_cli_with_a_tiny_random_model(bench, tiny_model, tmp_path, capsys):
    """End to end through the transformers adapter: a random model writes no parseable reply, so all is filtered."""
    main(["--model", tiny_model, "--data-dir", str(bench), "--target", "1",
          "--out", str(tmp_path / "out"), "--limit", "2", "--max-new-tokens", "4"])  # fmt: skip
    folder = next((bench / "Target").iterdir()).name
    stats = json.loads((tmp_path / "out" / folder / "synthesis_stats.json").read_text())
    assert stats["questions"] == 2
    for kind in ("fb", "neighbor", "fb_neighbor"):
        assert stats["kept"][kind] + sum(stats["filtered"][kind].values()) == 2
    assert stats["train_rows"]["<reject>"] == 2 + stats["kept"]["fb"]
    assert folder in capsys.readouterr().out
