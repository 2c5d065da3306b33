"""One local Ray instance for the whole test session (starting Ray costs ~5 s)."""

import os

import pytest

DIST_ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture(scope="session")
def ray_session():
    import ray

    from verl.single_controller import init_ray

    if ray.is_initialized():  # another test package started it: reuse
        yield ray
        return
    init_ray(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture
def restore_dist_env():
    """In-process worker groups write RANK, MASTER_PORT, ... into os.environ; undo that after the test."""
    saved = {key: os.environ.get(key) for key in DIST_ENV_KEYS}
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
