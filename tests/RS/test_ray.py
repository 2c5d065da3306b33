"""The one Ray test: 2 FSDP-sharded CPU workers train exactly like one in-process worker."""

import pytest
import torch

from tests.RS.conftest import write_json
from tests.RS.test_trainer import FACTS, make_trainer


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    from verl.single_controller import init_ray

    started = not ray.is_initialized()
    init_ray(num_cpus=2)
    yield
    if started:
        ray.shutdown()


def test_two_sharded_ray_workers_match_one_inprocess_worker(tmp_path, tiny_model_dir, ray_cluster):
    corpus = write_json(tmp_path / "positive.json", [{"text": t} for t in FACTS + ["Ann Lee had a dog."]])
    common = [
        "optim.lr=2e-3",
        "loss.params={beta: 0.2}",
        "trainer.batch_size=4",
        "trainer.micro_batch_size_for_logps=2",
    ]
    ray_args = [
        "trainer.backend=ray",
        "trainer.n_workers=2",
        "trainer.cpus_per_worker=0.5",
        "trainer.micro_batch_size_per_device=1",
    ]
    sharded = make_trainer(tmp_path / "ray", tiny_model_dir, "npo", corpus, common + ray_args)
    single = make_trainer(
        tmp_path / "one", tiny_model_dir, "npo", corpus, common + ["trainer.micro_batch_size_per_device=4"]
    )
    try:
        sharded.init_workers()  # reference log-probs of 5 rows on 2 ranks (padded) then the reference is freed
        single.init_workers()
        (local0, full0), (local1, full1) = sharded.worker_group.param_numel()
        assert full0 == full1 and local0 < full0 and local0 + local1 == full0  # parameters are sharded
        for name in ("forget",):
            torch.testing.assert_close(
                torch.from_numpy(sharded.ref_logps[name]), torch.from_numpy(single.ref_logps[name])
            )
        for step, rows in enumerate(([0, 1, 2, 3], [4, 3, 2, 1], [1, 4, 0, 2])):
            a, b = sharded.train_step(rows, 0, step), single.train_step(rows, 0, step)
            # global normalizers: 2 ranks x 2 micro-batches give the full-batch loss and gradient
            assert a["loss"] == pytest.approx(b["loss"], rel=1e-4) and a["grad_norm"] == pytest.approx(
                b["grad_norm"], rel=1e-4
            )
        sharded.worker_group.export_hf(str(tmp_path / "export"))
        from transformers import AutoModelForCausalLM

        exported = AutoModelForCausalLM.from_pretrained(str(tmp_path / "export")).state_dict()
        gathered = sharded.worker_group.full_state_dict()[0]
        reference = single.worker_group.full_state_dict()[0]
        for key, value in reference.items():
            torch.testing.assert_close(exported[key], gathered[key], rtol=0, atol=0)  # export is the sharded model
            # Adam divides by sqrt(v): where a gradient is ~0, summation-order noise moves a weight by up to
            # ~lr per step, so two shardings agree to a fraction of lr (2e-3), not to float32 epsilon.
            torch.testing.assert_close(gathered[key], value, rtol=1e-4, atol=1e-4)
    finally:
        sharded.close()
