"""InProcessWorkerGroup: environment set up for a one-rank torch.distributed group, no Ray."""

import os
import subprocess
import sys

from tests.single_controller.toy_workers import ToyWorker
from verl.single_controller import ClassWithInitArgs, InProcessWorkerGroup


def test_sets_single_rank_environment(restore_dist_env):
    group = InProcessWorkerGroup(ClassWithInitArgs(ToyWorker, scale=4.0))
    (described,) = group.describe()
    env = described["env"]
    assert (env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"], env["MASTER_ADDR"]) == ("0", "1", "0", "127.0.0.1")
    assert env["MASTER_PORT"].isdigit()
    assert described["pid"] == os.getpid()  # really in this process
    assert group.workers[0].scale == 4.0


def test_one_rank_gloo_group_initialises():
    """In a fresh interpreter: other in-process tests leave torch.distributed initialised in this one."""
    code = (
        "from verl.single_controller import ClassWithInitArgs, InProcessWorkerGroup\n"
        "from tests.single_controller.toy_workers import ToyWorker\n"
        "assert InProcessWorkerGroup(ClassWithInitArgs(ToyWorker)).gloo_all_reduce_rank() == [0.0]\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


def test_simulated_ranks_leave_rank_zero_environment(restore_dist_env):
    group = InProcessWorkerGroup(ClassWithInitArgs(ToyWorker), world_size=2)
    assert [w.rank for w in group.workers] == [0, 1]
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"]) == ("0", "2")


def test_importing_the_package_does_not_import_ray():
    code = "import sys, verl.single_controller as sc; assert 'ray' not in sys.modules; sc.RayWorkerGroup; assert 'ray' in sys.modules"
    subprocess.run(
        [sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
    )
