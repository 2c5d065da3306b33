"""RWKU target folders and selection specs, against the real files in ../shared/data/rwku and tmp copies."""

import json
import unicodedata

import pytest

from verl.utils.rwku_targets import (
    Target,
    known_targets,
    list_targets,
    match_targets,
    read_all_intro,
    select_targets,
    target_dir_name,
)


@pytest.fixture(scope="module")
def rwku_dir(shared_data):
    return shared_data / "rwku"


def _make_target(root, dirname, name=None):
    folder = root / "Target" / dirname
    folder.mkdir(parents=True)
    if name is not None:
        (folder / "intro.json").write_text(json.dumps([{"target": name, "intro": f"Please forget {name}."}]))
    return folder


def test_target_dir_name_matches_the_real_folders(rwku_dir):
    for folder in (rwku_dir / "Target").iterdir():
        intro = json.loads((folder / "intro.json").read_text(encoding="utf-8"))[0]
        index = int(folder.name.split("_", 1)[0])
        assert target_dir_name(index, intro["target"]) == folder.name
    assert target_dir_name(10, "Prince Harry, Duke of Sussex") == "10_Prince_Harry,_Duke_of_Sussex"
    assert target_dir_name(24, "Beyoncé") == "24_Beyoncé"


def test_list_targets_reads_names_from_intro_json(rwku_dir):
    targets = list_targets(rwku_dir)
    assert [t.index for t in targets] == list(range(1, 11))
    assert targets[0] == Target(1, "Stephen King", "1_Stephen_King")
    # the comma survives because the name comes from intro.json, not from the folder name
    assert targets[9].name == "Prince Harry, Duke of Sussex"
    assert targets[9].dirname == "10_Prince_Harry,_Duke_of_Sussex"


def test_list_targets_falls_back_to_folder_name_and_sorts_numerically(tmp_path):
    _make_target(tmp_path, "10_Some_Body")
    _make_target(tmp_path, "2_Confucius", "Confucius")
    (tmp_path / "Target" / "notes").mkdir()  # ignored: no "<n>_" prefix
    assert list_targets(tmp_path) == [Target(2, "Confucius", "2_Confucius"), Target(10, "Some Body", "10_Some_Body")]
    assert list_targets(tmp_path / "absent") == []


def test_duplicate_index_is_an_error(tmp_path):
    _make_target(tmp_path, "1_A")
    _make_target(tmp_path, "1_B")
    with pytest.raises(ValueError, match="share index 1"):
        list_targets(tmp_path)


def test_known_targets_merges_all_intro_with_downloaded(rwku_dir):
    raw = json.loads((rwku_dir / "all_intro.json").read_text(encoding="utf-8"))
    known = known_targets(rwku_dir)
    assert len(known) == len(raw) == 200
    assert [t.name for t in known] == list(raw)  # file order is the index order
    assert known[23] == Target(24, "Beyoncé", "24_Beyoncé")
    assert known[:10] == list_targets(rwku_dir)


def test_read_all_intro_accepts_hub_record_list(tmp_path):
    records = [{"target": "Stephen King", "intro": "x"}, {"target": "Confucius", "intro": "y"}]
    (tmp_path / "all_intro.json").write_text(json.dumps(records))
    assert read_all_intro(tmp_path) == [
        Target(1, "Stephen King", "1_Stephen_King"),
        Target(2, "Confucius", "2_Confucius"),
    ]
    (tmp_path / "all_intro.json").write_text(json.dumps([{"intro": "no name"}]))
    with pytest.raises(ValueError, match="row 0 has no 'target'"):
        read_all_intro(tmp_path)


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("1-10", list(range(1, 11))),
        ("1,3,5-7", [1, 3, 5, 6, 7]),
        (" 2 - 4 ", [2, 3, 4]),
        ("Stephen King", [1]),
        ("stephen king", [1]),
        ("Stephen_King", [1]),
        ("1_Stephen_King", [1]),
        ("all", list(range(1, 11))),
        (["2", 4, "Bruce Lee"], [2, 4, 3]),
        ("Prince Harry, Duke of Sussex", [10]),
        ("Prince Harry, Duke of Sussex, Confucius", [10, 2]),
        ("1-3,2", [1, 2, 3]),
        (7, [7]),
    ],
)
def test_select_targets_specs(rwku_dir, spec, expected):
    assert [t.index for t in select_targets(spec, rwku_dir)] == expected


def test_non_ascii_target(tmp_path):
    _make_target(tmp_path, "24_Beyoncé", "Beyoncé")
    _make_target(tmp_path, "1_Stephen_King", "Stephen King")
    beyonce = Target(24, "Beyoncé", "24_Beyoncé")
    decomposed = unicodedata.normalize("NFD", "Beyoncé")  # same name typed with a combining accent
    for spec in ("Beyoncé", "beyoncé", "Beyonce", decomposed, "24_Beyoncé", "24", ["24"]):
        assert select_targets(spec, tmp_path) == [beyonce], spec


def test_unknown_target_lists_the_valid_ones(rwku_dir):
    with pytest.raises(ValueError) as info:
        select_targets("Nobody Atall", rwku_dir)
    message = str(info.value)
    assert "'Nobody Atall'" in message
    assert "1 Stephen King" in message and "10 Prince Harry, Duke of Sussex" in message


def test_typo_gets_a_suggestion(rwku_dir):
    with pytest.raises(ValueError, match="did you mean '1 Stephen King'"):
        select_targets("Stephen Kink", rwku_dir)


def test_known_but_not_downloaded_says_how_to_download(rwku_dir):
    for spec in ("24", "Beyoncé", "9-12"):
        with pytest.raises(ValueError) as info:
            select_targets(spec, rwku_dir)
        message = str(info.value)
        assert "all_intro.json" in message and "not downloaded" in message
        assert "python -m data.download rwku --targets" in message
    with pytest.raises(ValueError, match="11 Miley Cyrus, 12 Genghis Khan"):
        select_targets("9-12", rwku_dir)


def test_missing_index_without_all_intro(tmp_path):
    _make_target(tmp_path, "1_Stephen_King", "Stephen King")
    with pytest.raises(ValueError, match="no RWKU target with index 5") as info:
        select_targets("5", tmp_path)
    assert "not downloaded" not in str(info.value)


@pytest.mark.parametrize("spec", ["3-1", "", [], [None], [True], 1.5])
def test_bad_specs(rwku_dir, spec):
    with pytest.raises(ValueError):
        select_targets(spec, rwku_dir)


def test_empty_folder_reports_none_available(tmp_path):
    with pytest.raises(ValueError, match="none"):
        select_targets("1", tmp_path)


def test_match_targets_works_on_any_candidate_list():
    candidates = [Target.make(1, "Stephen King"), Target.make(2, "Confucius")]
    assert match_targets("Confucius,1", candidates) == candidates[::-1]
    with pytest.raises(ValueError, match="in somewhere"):
        match_targets("3", candidates, where="somewhere")
