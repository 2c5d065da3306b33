"""ReBO rows: flattening RULE's boundary-source rows and building the validation rows from the probes
reproduce RULE's released files exactly (every shared target that has them)."""

import json

from data.rebo_rows import build_eval_rows, flatten_rebo_rows


def test_flatten_and_eval_rows_reproduce_rules_files(shared_data):
    """The ReBO training file is RULE's source rows flattened in order; the validation file is the probes."""
    checked = 0
    for folder in sorted((shared_data / "rwku/Target").iterdir()):
        source, train = (
            folder / "reject_with_fb_neighbor_target.json",
            folder / "rl_rejection_with_fb_neighbor_target.json",
        )
        if source.is_file() and train.is_file():
            expected = json.loads(train.read_text())
            assert flatten_rebo_rows(json.loads(source.read_text()), shuffle=False) == expected
            checked += 1
        if (folder / "rl_rejection_eval_target.json").is_file():
            assert build_eval_rows(folder) == json.loads((folder / "rl_rejection_eval_target.json").read_text())
    assert checked >= 1
