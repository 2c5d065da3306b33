"""The benchmark downloader: local folders, offline errors, and the online path against fake hubs (no network)."""

import json
import re
import shutil
from pathlib import Path

import pytest

from data import download
from data.download import (
    DEFAULT_RWKU_FILES,
    DataNotAvailableError,
    expand_rwku_files,
    fetch_muse_books,
    fetch_rwku,
    write_json_atomic,
)
from verl.utils.rwku_targets import list_targets, select_targets

REPO_ROOT = Path(__file__).resolve().parents[2]
# 24 targets so that Beyoncé sits at her real index; the others get filler names
NAMES = ["Stephen King", "Confucius"] + [f"Person {i}" for i in range(3, 24)] + ["Beyoncé"]


def _records(name, stem):
    if stem == "intro":
        return [{"target": name, "intro": f"Please forget {name}."}]
    return [{"query": f"{stem} about {name} ___", "answer": "x", "subject": name}]


def _write_target(root, index, stems):
    name = NAMES[index - 1]
    folder = root / "Target" / f"{index}_{name.replace(' ', '_')}"
    folder.mkdir(parents=True, exist_ok=True)
    for stem in stems:
        (folder / f"{stem}.json").write_text(json.dumps(_records(name, stem), ensure_ascii=False), encoding="utf-8")


@pytest.fixture
def fake_hub(tmp_path):
    """The hub's file layout: All/intro.json (records) and Target/<n>_<Name>/<file>.json for targets 1, 2 and 24."""
    hub = tmp_path / "hub"
    (hub / "All").mkdir(parents=True)
    records = [{"target": name, "intro": f"{name} is famous."} for name in NAMES]
    (hub / "All" / "intro.json").write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    for index in (1, 2, 24):
        _write_target(hub, index, DEFAULT_RWKU_FILES + ("retain_mmlu",))
    return hub


@pytest.fixture
def local_layout(tmp_path):
    """A local folder in RWKU's layout (what ../shared/data/rwku looks like), with RULE's idk_target for target 1."""
    local = tmp_path / "local"
    for index in (1, 24):
        _write_target(local, index, DEFAULT_RWKU_FILES)
    _write_target(local, 1, ["idk_target"])
    all_intro = {name: [f"{name} is famous."] for name in NAMES}
    (local / "all_intro.json").write_text(json.dumps(all_intro, ensure_ascii=False), encoding="utf-8")
    return local


@pytest.fixture
def online_hub(fake_hub, monkeypatch):
    """Replace hf_hub_download with a copy from ``fake_hub``; returns the list of calls made."""
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    calls = []

    def fake_download(repo_id, filename, *, repo_type=None, local_dir=None, **kwargs):
        calls.append((repo_id, filename, repo_type))
        source = fake_hub / filename
        if not source.is_file():
            raise EntryNotFoundError(f"{filename} not found in {repo_id}")
        target = Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        return str(target)

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    return calls


@pytest.fixture
def offline(monkeypatch):
    import huggingface_hub

    def no_network(*args, **kwargs):
        raise AssertionError("offline mode must not call the hub")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)


# ----------------------------------------------------------------------------- RWKU, local folders
def test_complete_local_dir_is_used_as_is(local_layout, tmp_path, offline):
    result = fetch_rwku("1,Beyoncé", tmp_path / "cache", local_dir=local_layout)
    assert result == local_layout
    assert not (tmp_path / "cache").exists()  # nothing copied
    assert [t.index for t in select_targets("1,24", result)] == [1, 24]


def test_partial_local_dir_is_copied_then_reported(local_layout, tmp_path, offline):
    (local_layout / "Target" / "24_Beyoncé" / "forget_mia.json").unlink()
    with pytest.raises(DataNotAvailableError) as info:
        fetch_rwku("1,24", tmp_path / "cache", local_dir=local_layout)
    message = str(info.value)
    assert "1 file(s) missing: Target/24_Beyoncé/forget_mia.json" in message
    root = tmp_path / "cache" / "rwku"
    copied = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.json"))
    expected = ["all_intro.json"] + [
        f"Target/{d}/{stem}.json" for d in ("1_Stephen_King", "24_Beyoncé") for stem in DEFAULT_RWKU_FILES
    ]
    expected.remove("Target/24_Beyoncé/forget_mia.json")
    assert copied == sorted(expected)
    assert (root / "Target/1_Stephen_King/intro.json").read_bytes() == (
        local_layout / "Target/1_Stephen_King/intro.json"
    ).read_bytes()


def test_rule_files_come_from_local_dir_only(local_layout, tmp_path, online_hub):
    result = fetch_rwku("1", tmp_path / "cache", files=["intro", "idk_target"], local_dir=local_layout)
    assert result == local_layout
    with pytest.raises(DataNotAvailableError, match="not on the RWKU hub") as info:
        fetch_rwku("1", tmp_path / "cache", files="rule")
    assert "Target/1_Stephen_King/reject_target.json" in str(info.value)
    assert not any(name.startswith("Target/") for _, name, _ in online_hub)  # never asked the hub for them


def test_optional_rule_files_are_taken_where_they_exist_and_never_fetched(local_layout, tmp_path, online_hub):
    """RULE released its files for some targets only: asked as optional, a target without them is no error."""
    assert fetch_rwku("1,24", tmp_path / "cache", local_dir=local_layout, optional="rule") == local_layout
    files = [*DEFAULT_RWKU_FILES, "retain_mmlu"]  # not in the local folder: the cache is used, filled from the hub
    root = fetch_rwku("1,24", tmp_path / "cache", files, local_dir=local_layout, optional=["rule"])
    assert root == tmp_path / "cache" / "rwku"
    assert (root / "Target/1_Stephen_King/idk_target.json").read_bytes() == (
        local_layout / "Target/1_Stephen_King/idk_target.json"
    ).read_bytes()
    assert (root / "Target/24_Beyoncé/retain_mmlu.json").is_file()
    assert not list(root.glob("Target/24_Beyoncé/idk_target.json"))
    assert not [name for _, name, _ in online_hub if Path(name).stem in download.RULE_ONLY_FILES]
    with pytest.raises(DataNotAvailableError, match="not on the RWKU hub"):  # asked as required: still an error
        fetch_rwku("24", tmp_path / "cache", ["intro", "idk_target"], local_dir=local_layout)


# ----------------------------------------------------------------------------- RWKU, offline errors
def test_offline_without_anything_cached_names_the_target_list_and_command(tmp_path, offline):
    with pytest.raises(DataNotAvailableError) as info:
        fetch_rwku("1-10", tmp_path / "cache")
    message = str(info.value)
    assert "All/intro.json" in message and "HF_HUB_OFFLINE=1" in message
    assert f"python -m data.download rwku --targets 1-10 --cache-dir {tmp_path / 'cache'}" in message
    assert "--local-dir" in message and "jinzhuoran/RWKU" in message


def test_offline_with_target_list_names_the_missing_files(tmp_path, offline, shared_data):
    root = tmp_path / "cache" / "rwku"
    root.mkdir(parents=True)
    shutil.copyfile(shared_data / "rwku" / "all_intro.json", root / "all_intro.json")
    with pytest.raises(DataNotAvailableError) as info:
        fetch_rwku("1-10", tmp_path / "cache")
    message = str(info.value)
    assert f"{10 * len(DEFAULT_RWKU_FILES)} file(s) missing" in message
    assert "Target/1_Stephen_King/intro.json" in message
    assert f"and {10 * len(DEFAULT_RWKU_FILES) - download.SHOWN_MISSING} more" in message
    assert "python -m data.download rwku --targets 1-10" in message
    assert "../shared/data/rwku" in message
    # an unknown name with the full target list at hand is a spec error, not a download problem
    with pytest.raises(ValueError, match="unknown RWKU target 'Nobody'"):
        fetch_rwku("Nobody", tmp_path / "cache")


def test_shared_data_serves_as_local_dir(tmp_path, offline, shared_data):
    result = fetch_rwku("1-10", tmp_path / "cache", local_dir=shared_data / "rwku")
    assert result == shared_data / "rwku"
    with pytest.raises(DataNotAvailableError, match="Target/3_Bruce_Lee/retain_mmlu.json"):
        fetch_rwku("1-3", tmp_path / "cache", files="utility", local_dir=shared_data / "rwku")


# ----------------------------------------------------------------------------- RWKU, online (fake hub)
def test_online_download_writes_the_per_target_layout(tmp_path, fake_hub, online_hub):
    root = fetch_rwku("Beyoncé,2", tmp_path / "cache")
    assert root == tmp_path / "cache" / "rwku"
    assert [t.index for t in list_targets(root)] == [2, 24]
    assert [t.name for t in select_targets("beyonce", root)] == ["Beyoncé"]
    for dirname in ("2_Confucius", "24_Beyoncé"):
        for stem in DEFAULT_RWKU_FILES:
            rel = f"Target/{dirname}/{stem}.json"
            assert (root / rel).read_bytes() == (fake_hub / rel).read_bytes()
    all_intro = json.loads((root / "all_intro.json").read_text(encoding="utf-8"))
    assert list(all_intro) == NAMES and all_intro["Beyoncé"] == ["Beyoncé is famous."]
    assert {(repo, kind) for repo, _, kind in online_hub} == {("jinzhuoran/RWKU", "dataset")}
    assert sorted(name for _, name, _ in online_hub) == sorted(
        ["All/intro.json"]
        + [f"Target/{d}/{s}.json" for d in ("2_Confucius", "24_Beyoncé") for s in DEFAULT_RWKU_FILES]
    )

    online_hub.clear()
    assert fetch_rwku("2,24", tmp_path / "cache") == root
    assert online_hub == []  # everything cached: no hub calls
    fetch_rwku("1", tmp_path / "cache", files="probes,retain_mmlu")
    assert sorted(name for _, name, _ in online_hub) == sorted(
        f"Target/1_Stephen_King/{s}.json" for s in expand_rwku_files("probes,retain_mmlu")
    )


def test_online_download_copies_from_a_hub_cache_path(tmp_path, fake_hub, monkeypatch):
    """hf_hub_download may return a path in its own cache: the file is still copied into the layout."""
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda repo, name, **kw: str(fake_hub / name))
    root = fetch_rwku("1", tmp_path / "cache", files="intro")
    assert json.loads((root / "Target/1_Stephen_King/intro.json").read_text())[0]["target"] == "Stephen King"


def test_file_absent_on_hub(tmp_path, online_hub):
    with pytest.raises(DataNotAvailableError, match="Target/1_Stephen_King/fluency.json is not in the Hugging Face"):
        fetch_rwku("1", tmp_path / "cache", files="fluency")


def test_connection_failure_lists_missing_files(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def unreachable(*args, **kwargs):
        raise LocalEntryNotFoundError("Connection error, and no cached file")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", unreachable)
    with pytest.raises(DataNotAvailableError) as info:
        fetch_rwku("1", tmp_path / "cache", local_dir=None, files="probes,utility")
    message = str(info.value)
    assert "cannot reach the Hugging Face Hub" in message and "All/intro.json" in message


def test_expand_rwku_files():
    assert expand_rwku_files("probes,mia") == list(DEFAULT_RWKU_FILES)
    assert expand_rwku_files(["forget_level1.json", "forget_level1", "mia"]) == [
        "forget_level1",
        "forget_mia",
        "retain_mia",
    ]
    with pytest.raises(ValueError, match="bare name"):
        expand_rwku_files("Target/x.json")
    with pytest.raises(ValueError, match="no RWKU files"):
        expand_rwku_files("")


# ----------------------------------------------------------------------------- MUSE-Books
def test_muse_local_knowmem(tmp_path, offline, shared_data):
    local = shared_data / "muse" / "books"
    assert fetch_muse_books(tmp_path / "cache", local_dir=local, parts="knowmem") == local
    with pytest.raises(DataNotAvailableError) as info:
        fetch_muse_books(tmp_path / "cache", local_dir=local)
    message = str(info.value)
    assert "4 file(s) missing: verbmem/forget.json, privleak/forget.json" in message
    assert "python -m data.download muse" in message and "muse-bench/MUSE-Books" in message
    root = tmp_path / "cache" / "muse" / "books"
    assert json.loads((root / "knowmem" / "forget_qa.json").read_text()) == json.loads(
        (local / "knowmem" / "forget_qa.json").read_text()
    )
    assert (root / "idk_target.json").is_file()  # RULE's MUSE file travels along


def test_muse_online_writes_the_official_layout(tmp_path, monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(repo_id, config, split):
        calls.append((repo_id, config, split))
        if config == "knowmem":
            return [{"question": f"{split} q{i}", "answer": f"a{i}", "extra": 0} for i in range(3)]
        if config == "verbmem":
            return [{"prompt": "synthetic prompt", "gt": "synthetic continuation"}]
        return [{"text": f"synthetic {split} passage {i}"} for i in range(2)]

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    root = fetch_muse_books(tmp_path / "cache")
    assert root == tmp_path / "cache" / "muse" / "books"
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.json"))
    assert files == sorted(download.MUSE_BOOKS_FILES)
    assert json.loads((root / "knowmem/retain_qa.json").read_text()) == [
        {"question": f"retain_qa q{i}", "answer": f"a{i}"} for i in range(3)
    ]
    assert json.loads((root / "verbmem/forget.json").read_text()) == [
        {"prompt": "synthetic prompt", "gt": "synthetic continuation"}
    ]
    assert json.loads((root / "privleak/holdout.json").read_text()) == [
        f"synthetic holdout passage {i}" for i in range(2)
    ]
    assert ("muse-bench/MUSE-Books", "privleak", "retain") in calls and len(calls) == 8


def test_muse_bad_rows_and_parts(tmp_path, monkeypatch):
    import datasets

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", lambda repo, config, split: [{"question": "q"}])
    with pytest.raises(ValueError, match=r"knowmem/forget_qa: row 0 lacks field\(s\) \['answer'\]"):
        fetch_muse_books(tmp_path / "cache", parts="knowmem")
    with pytest.raises(ValueError, match="unknown MUSE parts"):
        fetch_muse_books(tmp_path / "cache", parts="raw")


# ----------------------------------------------------------------------------- CLI, atomic writes, layering
def test_cli(tmp_path, local_layout, offline, capsys):
    result = download.main(
        ["rwku", "--targets", "1", "--cache-dir", str(tmp_path / "c"), "--local-dir", str(local_layout)]
    )
    assert result == local_layout and capsys.readouterr().out.strip() == str(local_layout)
    with pytest.raises(SystemExit) as exit_info:
        download.main(["rwku", "--targets", "2", "--cache-dir", str(tmp_path / "c"), "--local-dir", str(local_layout)])
    assert exit_info.value.code == 2
    assert "Target/2_Confucius/intro.json" in capsys.readouterr().err
    for command, flags in (
        ("rwku", ["--targets", "--files", "--cache-dir", "--local-dir", "--repo-id"]),
        ("muse", ["--parts"]),
    ):
        with pytest.raises(SystemExit) as exit_info:
            download.main([command, "--help"])
        assert exit_info.value.code == 0
        help_text = capsys.readouterr().out
        assert all(flag in help_text for flag in flags)


def test_write_json_atomic(tmp_path):
    path = tmp_path / "sub" / "f.json"
    write_json_atomic(path, [{"target": "Beyoncé"}])
    assert "Beyoncé" in path.read_text(encoding="utf-8")
    with pytest.raises(TypeError):
        write_json_atomic(path, [object()])
    assert json.loads(path.read_text(encoding="utf-8")) == [{"target": "Beyoncé"}]  # old content intact
    assert [p.name for p in path.parent.iterdir()] == ["f.json"]  # no temp file left


def test_verl_never_imports_data():
    pattern = re.compile(r"^\s*(from|import)\s+data(\.|\s|$)", re.MULTILINE)
    offenders = [str(p) for p in (REPO_ROOT / "verl").rglob("*.py") if pattern.search(p.read_text(encoding="utf-8"))]
    assert offenders == []
