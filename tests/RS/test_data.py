"""Refusal data builder and readers: cyclic templates, generic refusals, batch targets, bad inputs."""

import json

import pytest

from RS import data as rs_data


def test_target_refusals_are_assigned_cyclically():
    questions = [f"q{i}?" for i in range(7)]
    templates = ["No idea about {target}.", "I can't say anything on {target}.", "{target}? Not known to me."]
    rows = rs_data.build_refusal_rows(questions, "Ada Lovelace", templates)
    assert [r["prompt"] for r in rows] == questions
    for i, row in enumerate(rows):
        assert row["response"] == templates[i % 3].replace("{target}", "Ada Lovelace")
        assert row["subject"] == "Ada Lovelace"


def test_default_templates_name_the_target_and_generic_ones_do_not():
    assert 20 <= len(rs_data.TARGET_REFUSALS) <= 100
    assert all("{target}" in t for t in rs_data.TARGET_REFUSALS)
    assert all("{" not in t for t in rs_data.GENERIC_REFUSALS)
    rows = rs_data.build_refusal_rows(["a?", "b?"], "Bruce Lee")
    assert all("Bruce Lee" in r["response"] for r in rows)
    generic = rs_data.build_refusal_rows(["a?", "b?"], "Bruce Lee", mode="generic")
    assert [r["response"] for r in generic] == rs_data.GENERIC_REFUSALS[:2]


def test_batch_of_targets_restarts_the_cycle_per_target():
    rows = rs_data.build_batch_refusal_rows({"A B": ["1", "2", "3"], "C D": ["4", "5"]}, ["x {target}", "y {target}"])
    assert [r["response"] for r in rows] == ["x A B", "y A B", "x A B", "x C D", "y C D"]
    assert [r["subject"] for r in rows] == ["A B"] * 3 + ["C D"] * 2


def test_template_without_placeholder_is_a_one_line_error_naming_it():
    with pytest.raises(ValueError, match='refusal template "I don\'t know." .* has no \\{target\\} placeholder') as e:
        rs_data.build_refusal_rows(["q?"], "X", ["Not sure about {target}.", "I don't know."])
    assert "item 1" in str(e.value) and "\n" not in str(e.value)
    # generic mode accepts it
    assert rs_data.build_refusal_rows(["q?"], "X", ["I don't know."], mode="generic")[0]["response"] == "I don't know."


def test_empty_inputs_are_errors_naming_the_file(tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    with pytest.raises(ValueError, match=f"dataset {empty} is empty"):
        rs_data.read_sft_rows(empty)
    with pytest.raises(ValueError, match=f"dataset {empty} is empty"):
        rs_data.read_questions(empty)
    blank = tmp_path / "refusals.txt"
    blank.write_text("\n\n")
    with pytest.raises(ValueError, match=f"refusal template file {blank} holds no refusals"):
        rs_data.load_templates(str(blank), "generic")
    with pytest.raises(ValueError, match="no questions given for target 'X'"):
        rs_data.build_refusal_rows([], "X")


def test_unknown_refusal_mode():
    with pytest.raises(ValueError, match="refusal mode 'polite' is not allowed; choose one of: target, generic"):
        rs_data.load_templates(None, "polite")


def test_template_files_json_list_and_plain_lines(tmp_path):
    listed = tmp_path / "idk.json"
    listed.write_text(json.dumps(["I'm unsure about {target}.", "No data on {target}."]))
    assert rs_data.load_templates(str(listed), "target") == ["I'm unsure about {target}.", "No data on {target}."]
    lines = tmp_path / "idontknow.jsonl"
    lines.write_text("I'm not certain about that.\n\"A JSON string.\"\nThat's beyond me.\n")
    assert rs_data.read_template_file(lines) == ["I'm not certain about that.", "A JSON string.", "That's beyond me."]


def test_rwku_files(shared_data):
    folder = shared_data / "rwku" / "Target" / "1_Stephen_King"
    rs_rows = rs_data.read_sft_rows(folder / "reject_target.json")
    assert len(rs_rows) == 300 and rs_rows[0]["response"] == "I'm not certain about Stephen King."
    raw = json.loads((folder / "reject_target.json").read_text())
    assert rs_rows[5]["prompt"] == raw[5]["instruction"]  # input is empty in RWKU rows
    # RULE's RS data = RWKU's RT questions with idk_target[i mod 100]; rebuild it from the generic file
    questions = rs_data.read_questions(folder / "reject.json")
    idk = rs_data.read_template_file(folder / "idk_target.json")
    templates = [t.replace("Stephen King", "{target}") for t in idk]
    rebuilt = rs_data.build_refusal_rows(questions, "Stephen King", templates)
    n = len(questions)  # the shared copy of reject.json holds the first 120 rows
    assert [r["response"] for r in rebuilt] == [r["response"] for r in rs_rows[:n]]
    assert [r["prompt"] for r in rebuilt] == [r["prompt"] for r in rs_rows[:n]]
    generic = rs_data.read_template_file(shared_data / "rwku" / "idontknow.jsonl")
    assert len(generic) == 100  # 100 lines; the last has no newline (so `wc -l` says 99)
    rt = rs_data.read_sft_rows(folder / "reject.json")
    assert [r["response"] for r in rt] == [generic[i % 100] for i in range(len(rt))]  # RWKU RT: round-robin
    text = rs_data.read_text_rows(folder / "positive.json")
    assert text[0]["text"].startswith("Stephen King") and text[0]["subject"] == "Stephen King"
    pairs = rs_data.read_pair_rows(folder / "pair.json")
    raw_pairs = json.loads((folder / "pair.json").read_text())
    assert pairs[0]["chosen"] == raw_pairs[0]["response"][0] and pairs[0]["rejected"] == raw_pairs[0]["response"][1]
    # the factual (rejected) bio of pair.json is the positive.json text
    assert pairs[0]["rejected"] == text[0]["text"]
    idk_pairs = rs_data.refusal_pairs(pairs[:3], rs_data.TARGET_REFUSALS)
    assert [p["chosen"] for p in idk_pairs] == [
        t.replace("{target}", "Stephen King") for t in rs_data.TARGET_REFUSALS[:3]
    ]
    assert [p["rejected"] for p in idk_pairs] == [p["rejected"] for p in pairs[:3]]
    boundary = rs_data.read_boundary_rows(folder / "reject_with_fb_neighbor_target.json")
    raw_boundary = json.loads((folder / "reject_with_fb_neighbor_target.json").read_text())
    assert len(boundary) == 2 * len(raw_boundary)
    assert boundary[0]["response"] == raw_boundary[0]["neighbor_question"]["answer"]
    assert boundary[1]["prompt"] == raw_boundary[0]["FB_neighbor_question"]["question"]
    forget_side = rs_data.read_rebo_rows(folder / "rl_rejection_with_fb_neighbor_target.json", "forget")
    retain_side = rs_data.read_rebo_rows(folder / "rl_rejection_with_fb_neighbor_target.json", "retain")
    assert len(forget_side) == len(retain_side) == 2 * len(raw_boundary)  # QA + FB form of each, both sides
    assert {r["subject"] for r in forget_side} == {"Stephen King"}
    assert all("Stephen King" in r["response"] for r in forget_side)
    assert {r["prompt"] for r in retain_side} == {r["prompt"] for r in boundary}


def test_format_detection_and_bad_rows(tmp_path):
    assert rs_data.detect_format({"instruction": "q", "output": "a"}) == "sft"
    assert rs_data.detect_format({"text": "t"}) == "text"
    assert rs_data.detect_format({"prompt": "p", "response": ["a", "b"]}) == "pair"
    assert rs_data.detect_format({"query": "q", "answer": "a"}) == "sft"
    with pytest.raises(ValueError, match="cannot tell the row format"):
        rs_data.detect_format({"foo": 1})
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"instruction": "q", "output": "a"}, {"instruction": "q2"}]))
    with pytest.raises(ValueError, match=f"{bad} row 1: no prompt/response keys"):
        rs_data.read_sft_rows(bad)
    pair = tmp_path / "pair.json"
    pair.write_text(json.dumps([{"prompt": "p", "response": ["only one"]}]))
    with pytest.raises(ValueError, match=f"{pair} row 0: 'response' must be a list of two strings"):
        rs_data.read_pair_rows(pair)


def test_cli_writes_alpaca_rows(tmp_path):
    questions = tmp_path / "q.json"
    questions.write_text(json.dumps([{"instruction": "Who?"}, {"instruction": "Where?"}]))
    out = tmp_path / "rs.json"
    rs_data.main(["--questions", str(questions), "--target", "Jane Doe", "--out", str(out)])
    rows = json.loads(out.read_text())
    assert rows[1] == {
        "instruction": "Where?",
        "input": "",
        "output": rs_data.TARGET_REFUSALS[1].replace("{target}", "Jane Doe"),
        "subject": "Jane Doe",
    }
