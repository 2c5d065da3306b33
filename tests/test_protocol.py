import pickle

import numpy as np
import pytest
import torch

from verl.protocol import DataProto, pad_dataproto_to_divisor, unpad_dataproto


def make(n=5):
    return DataProto.from_dict(
        tensors={"x": torch.arange(n * 3).view(n, 3), "y": torch.randn(n)},
        non_tensors={"uid": [f"u{i}" for i in range(n)], "gt": [["<normal>", str(i)] for i in range(n)]},
        meta_info={"temperature": 1.0},
    )


def test_len_and_mismatched_rows():
    assert len(make(5)) == 5
    with pytest.raises(ValueError, match="first dimension"):
        DataProto.from_dict({"a": torch.zeros(2), "b": torch.zeros(3)})
    with pytest.raises(ValueError, match="non_tensor_batch\\['u'\\]"):
        DataProto.from_dict({"a": torch.zeros(2)}, {"u": [1, 2, 3]})


def test_select_pop_union():
    d = make()
    s = d.select(["x"], ["uid"])
    assert list(s.batch.keys()) == ["x"] and list(s.non_tensor_batch) == ["uid"]
    popped = d.pop(["y"], ["gt"])
    assert "y" not in d.batch.keys() and "gt" not in d.non_tensor_batch
    assert torch.equal(popped.batch["y"], make().batch["y"]) or popped.batch["y"].shape == (5,)
    d.union(popped)
    assert set(d.keys()) == {"x", "y", "uid", "gt"}
    other = make()
    other.batch["x"] = other.batch["x"] + 1
    with pytest.raises(ValueError, match="'x' differs"):
        make().union(other)


def test_repeat_interleaved_and_tiled():
    d = make(3)
    r = d.repeat(2, interleave=True)
    assert list(r.non_tensor_batch["uid"]) == ["u0", "u0", "u1", "u1", "u2", "u2"]
    assert torch.equal(r.batch["x"][1], d.batch["x"][0])
    t = d.repeat(2, interleave=False)
    assert list(t.non_tensor_batch["uid"]) == ["u0", "u1", "u2", "u0", "u1", "u2"]


def test_chunk_split_concat_roundtrip():
    d = make(6)
    chunks = d.chunk(3)
    assert [len(c) for c in chunks] == [2, 2, 2]
    back = DataProto.concat(chunks)
    assert torch.equal(back.batch["x"], d.batch["x"])
    assert list(back.non_tensor_batch["uid"]) == list(d.non_tensor_batch["uid"])
    assert [len(p) for p in d.split(4)] == [4, 2]
    with pytest.raises(ValueError, match="pad to a divisor"):
        make(5).chunk(2)


def test_reorder_and_indexing():
    d = make(4)
    d.reorder(torch.tensor([3, 1, 0, 2]))
    assert list(d.non_tensor_batch["uid"]) == ["u3", "u1", "u0", "u2"]
    assert torch.equal(d.batch["x"][0], torch.tensor([9, 10, 11]))
    masked = d[np.array([True, False, True, False])]
    assert list(masked.non_tensor_batch["uid"]) == ["u3", "u0"]


def test_pad_and_unpad():
    d = make(5)
    padded, pad = pad_dataproto_to_divisor(d, 4)
    assert len(padded) == 8 and pad == 3
    assert list(padded.non_tensor_batch["uid"][5:]) == ["u0", "u1", "u2"]
    restored = unpad_dataproto(padded, pad)
    assert torch.equal(restored.batch["x"], d.batch["x"])
    same, zero = pad_dataproto_to_divisor(make(4), 2)
    assert zero == 0 and len(same) == 4


def test_pickle_roundtrip():
    d = make()
    e = pickle.loads(pickle.dumps(d))
    assert torch.equal(e.batch["x"], d.batch["x"])
    assert e.non_tensor_batch["gt"][2] == ["<normal>", "2"]
    assert e.meta_info == {"temperature": 1.0}
