"""Where a stage's tokenised data is cached, beside its workdir or on the host."""

from dpo_jax.run.inputs import default_cache_dir
from tests.train_helpers import tiny_config


def test_data_cache_is_local_for_a_gs_workdir(tmp_path):
    config = tiny_config("hh", "tiny")
    # TPU VMs write checkpoints to gs://; the tokenised-data cache must stay a local path.
    cache = default_cache_dir(config, "gs://bucket/runs/hh")
    assert "://" not in cache and cache.startswith("/")
    assert default_cache_dir(config, str(tmp_path)) == str(tmp_path / "data_cache")
    config.data.cache_dir = "/scratch/cache"
    assert default_cache_dir(config, "gs://bucket/runs/hh") == "/scratch/cache"
