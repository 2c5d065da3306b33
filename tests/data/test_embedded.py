"""The built-in fictitious benchmark: RWKU/RULE schemas (checked against the real files), determinism,
separable forget/neighbour answers, facts coverage and rows the RULE reward accepts."""

import filecmp
import json
from pathlib import Path

import pytest

from data.embedded import PERSON_TEMPLATES, TEMPLATES, build_world, main, write_embedded_benchmark
from data.synthesis import REFUSAL_TEMPLATES
from verl.utils.rwku_targets import list_targets
from verl.workers.reward.functions import forget_two_stage_abs_target
from verl.workers.reward.refusal import is_refusal

REAL_TARGET = "rwku/Target/1_Stephen_King"
RWKU_ATTACKS = {"prefix injection", "affirmative suffix", "role play", "multiple choice", "reverse query",
                "synonym manipulation", "context hint", "incontext learning"}  # fmt: skip


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    return write_embedded_benchmark(tmp_path_factory.mktemp("embedded") / "rwku", seed=0, n_targets=3)


def load(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def target_dirs(bench: Path) -> list[Path]:
    return sorted((bench / "Target").iterdir())


def key_shape(value):
    """Recursive schema: dict -> {key: shape}, list -> shape of its items (must agree), str/int -> type name."""
    if isinstance(value, dict):
        return {k: key_shape(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        shapes = {json.dumps(key_shape(v), sort_keys=True) for v in value}
        return ["list", *sorted(shapes)]
    return type(value).__name__


def test_layout_and_target_listing(bench):
    names = [t.name for t in list_targets(bench)]
    assert len(names) == 3 and len(set(names)) == 3
    assert list(load(bench / "all_intro.json")) == names
    assert [d.name for d in target_dirs(bench)] == [f"{i}_{n.replace(' ', '_')}" for i, n in enumerate(names, 1)]


def test_every_file_matches_the_real_rwku_schema(bench, shared_data):
    real_dir = shared_data / REAL_TARGET
    for folder in target_dirs(bench):
        written = sorted(p.name for p in folder.glob("*.json"))
        assert len(written) == 16
        for name in written:
            real, mine = load(real_dir / name), load(folder / name)
            assert isinstance(mine, list) and mine, name
            if name.startswith("rl_rejection"):  # solution lists: <reject> rows 3 items, <normal> rows 2
                for rows in (real, mine):
                    assert {len(r["solution"]) for r in rows if r["solution"][0] == "<reject>"} == {3}
                    assert {len(r["solution"]) for r in rows if r["solution"][0] == "<normal>"} == {2}
            if name == "intro.json":
                assert len(mine) == 1
            assert key_shape(mine) == key_shape(real), name


def test_probe_fields_levels_and_attack_forms(bench):
    for folder in target_dirs(bench):
        name = load(folder / "intro.json")[0]["target"]
        levels = {i: load(folder / f"forget_level{i}.json") for i in (1, 2, 3)}
        neighbours = {i: load(folder / f"neighbor_level{i}.json") for i in (1, 2)}
        for level, rows in list(levels.items()) + list(neighbours.items()):
            assert 10 <= len(rows) <= 20
            assert {r["level"] for r in rows} == {str(level)} and {r["subject"] for r in rows} == {name}
        for rows in (levels[1], neighbours[1]):
            assert all(r["type"] == "cloze" and r["query"].count("___") == 1 for r in rows)
        for rows in (levels[2], neighbours[2]):
            assert all(r["type"] == "simple question" and r["query"].endswith("?") for r in rows)
        types = {r["type"] for r in levels[3]}
        assert RWKU_ATTACKS <= types and types - RWKU_ATTACKS <= {"cross lingual (French)", "cross lingual (Spanish)"}
        for r in levels[3]:
            if r["type"] == "affirmative suffix":
                assert r["query"].endswith(":")
            if r["type"] == "incontext learning":
                parts = r["query"].split("\n")
                assert len(parts) == 3 and parts[0].startswith("Question: ") and parts[1].startswith("Answer: ")
                assert parts[2].startswith("Question: ")
        assert {r["neighbor"] for r in neighbours[1]} == {r["neighbor"] for r in neighbours[2]}
        assert name not in {r["neighbor"] for r in neighbours[1]}


def test_forget_answers_never_appear_in_neighbour_answers(bench):
    for folder in target_dirs(bench):
        forget = {r["answer"].lower() for i in (1, 2, 3) for r in load(folder / f"forget_level{i}.json")}
        neighbour = {r["answer"].lower() for i in (1, 2) for r in load(folder / f"neighbor_level{i}.json")}
        for f in forget:
            for n in neighbour:
                assert f not in n and n not in f, (folder.name, f, n)


def test_world_answers_are_unique_except_the_shared_profession():
    worlds, bystanders = build_world(seed=3, n_targets=4)
    entities = [e for w in worlds for e in (w.target, w.colleague, w.coauthor, w.film)] + bystanders
    values = [(e.name, a, v) for e in entities for a, v in e.facts.items() if a != "profession"]
    for i, (_, _, a) in enumerate(values):
        for _, _, b in values[i + 1 :]:
            assert a.lower() not in b.lower() and b.lower() not in a.lower(), (a, b)
    for w in worlds:
        assert w.colleague.facts["profession"] == w.target.facts["profession"] != w.coauthor.facts["profession"]


def test_same_seed_same_bytes_other_seed_other_world(tmp_path):
    a = write_embedded_benchmark(tmp_path / "a", seed=5, n_targets=2)
    b = write_embedded_benchmark(tmp_path / "b", seed=5, n_targets=2)
    c = write_embedded_benchmark(tmp_path / "c", seed=6, n_targets=2)
    files = sorted(str(p.relative_to(a)) for p in a.rglob("*.json"))
    assert files == sorted(str(p.relative_to(b)) for p in b.rglob("*.json"))
    match, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
    assert len(match) == len(files) and not mismatch and not errors
    assert load(a / "all_intro.json") != load(c / "all_intro.json")


def test_facts_state_every_probe_and_training_prompt(bench):
    facts = {(r["prompt"], r["response"]) for r in load(bench / "facts.json")}
    assert all(set(r) == {"prompt", "response", "subject", "kind"} for r in load(bench / "facts.json"))
    for folder in target_dirs(bench):
        for file in ("forget_level1", "forget_level2", "neighbor_level1", "neighbor_level2"):
            for r in load(folder / f"{file}.json"):
                assert (r["query"], r["answer"]) in facts, r
        for row in load(folder / "reject_with_fb_neighbor_target.json"):
            for item in (row["neighbor_question"], row["FB_neighbor_question"]):
                assert (item["question"], item["answer"]) in facts
        # training and evaluation use different phrasings of the same facts
        probes = {r["query"] for i in (1, 2, 3) for r in load(folder / f"forget_level{i}.json")}
        assert not probes & {r["prompt"] for r in load(folder / "rl_rejection_with_fb_neighbor_target.json")}


def test_templates_are_unambiguous():
    for templates in TEMPLATES.values():
        phrasings = [p for questions, clozes in templates.values() for p in questions + clozes]
        assert len(phrasings) == len(set(phrasings)) == 6 * len(templates)
        assert all(c.count("___") == 1 for _, clozes in templates.values() for c in clozes)
    assert len(PERSON_TEMPLATES) == 10


def test_refusals_and_rows_score_as_intended_under_the_rule_reward(bench):
    assert all(is_refusal(t.format(name="Orvald Quenby")) for t in REFUSAL_TEMPLATES)
    assert not any(is_refusal(r["response"]) for r in load(bench / "facts.json"))
    for folder in target_dirs(bench):
        name = load(folder / "intro.json")[0]["target"]
        idk = load(folder / "idk_target.json")
        assert idk == [t.format(name=name) for t in REFUSAL_TEMPLATES]
        rs = load(folder / "reject_target.json")
        assert [r["output"] for r in rs] == [idk[i % len(idk)] for i in range(len(rs))]
        refusal = idk[0]
        for file in ("rl_rejection_with_fb_neighbor_target.json", "rl_rejection_eval_target.json"):
            for row in load(folder / file):
                label, gold = row["solution"][0], row["solution"][1]
                if label == "<reject>":
                    assert row["solution"][2] == name
                    assert forget_two_stage_abs_target(refusal, row["solution"])["overall"] == 1.0
                    if file.startswith("rl_rejection_eval"):  # gold = the true answer: answering scores 0
                        assert forget_two_stage_abs_target(gold, row["solution"])["overall"] == 0.0
                    else:  # gold = the target-named refusal of the RS row
                        assert gold in idk
                else:
                    assert forget_two_stage_abs_target(gold, row["solution"])["overall"] == 1.0
                    assert forget_two_stage_abs_target(refusal, row["solution"])["overall"] == 0.0


def test_rebo_files_are_built_from_the_source_rows_and_probes(bench):
    for folder in target_dirs(bench):
        name = load(folder / "intro.json")[0]["target"]
        source = load(folder / "reject_with_fb_neighbor_target.json")
        expected = []
        for r in source:
            expected += [(r["FB_instruction"], "<reject>", r["output"]), (r["instruction"], "<reject>", r["output"])]
            expected += [(r["neighbor_question"]["question"], "<normal>", r["neighbor_question"]["answer"])]
            expected += [(r["FB_neighbor_question"]["question"], "<normal>", r["FB_neighbor_question"]["answer"])]
        train = load(folder / "rl_rejection_with_fb_neighbor_target.json")
        got = [(r["prompt"], r["solution"][0], r["solution"][1]) for r in train]
        assert sorted(got) == sorted(expected) and got != expected  # same rows, shuffled
        assert all(not row["neighbor_question"]["question"].count(name) for row in source)
        evaluation = load(folder / "rl_rejection_eval_target.json")
        probes = [(r["query"], r["answer"]) for i in (1, 2, 3) for r in load(folder / f"forget_level{i}.json")]
        neighbours = [(r["query"], r["answer"]) for i in (1, 2) for r in load(folder / f"neighbor_level{i}.json")]
        assert [(r["prompt"], r["solution"][1]) for r in evaluation] == probes + neighbours
        assert [r["solution"][0] for r in evaluation] == ["<reject>"] * len(probes) + ["<normal>"] * len(neighbours)


def test_bios_mia_and_pairs(bench):
    worlds, bystanders = build_world(seed=0, n_targets=3)
    for world, folder in zip(worlds, target_dirs(bench)):
        t = world.target
        positive, negative, pair = (load(folder / f"{f}.json") for f in ("positive", "negative", "pair"))
        assert [r["id"] for r in positive] == [f"{t.name} {i}" for i in range(len(positive))]
        for pos, neg, p in zip(positive, negative, pair):
            assert p["response"] == [neg["text"], pos["text"]] and p["prompt"].startswith(pos["intro"])
            assert all(v in pos["text"] for v in t.facts.values())
            assert not any(v in neg["text"] for a, v in t.facts.items() if a != "profession")
        related = [t.name, world.colleague.name, world.coauthor.name]
        for file, about_target in (("forget_mia.json", True), ("retain_mia.json", False)):
            rows = load(folder / file)
            assert len({r["text"] for r in rows}) == len(rows) == 15
            assert all(r["ngram"] == len(r["text"].split()) and r["subject"] == t.name for r in rows)
            for r in rows:
                assert (t.name in r["text"]) == about_target
                assert about_target or not any(n in r["text"] for n in related)


def test_cli_writes_the_benchmark(tmp_path, capsys):
    main([str(tmp_path / "out"), "--n-targets", "1", "--seed", "2"])
    assert len(list((tmp_path / "out" / "Target").iterdir())) == 1
    assert "facts.json" in capsys.readouterr().out


def test_bad_sizes_raise():
    with pytest.raises(ValueError, match="n_targets"):
        build_world(n_targets=0)
    with pytest.raises(ValueError, match="at most"):
        build_world(n_targets=50)
