"""Rejection Steering and the offline unlearning baselines: ``python3 -m RS.train config=FILE key=value ...``

Examples::

    python3 -m RS.train config=examples/rs_smollm2.yaml trainer.epochs=3
    python3 -m RS.train config=examples/baselines/npo.yaml data.train_files=../shared/data/rwku/Target/1_Stephen_King/positive.json

Outputs go to ``{trainer.output_dir}/{trainer.experiment_name}``: ``epoch_{k}/`` (plain HF folders),
``metrics.jsonl``, ``rs_config.json``, ``summary.json``. ``--help`` lists every key with its default.
"""

from __future__ import annotations

import os
import sys

from RS.config import RSConfig
from verl.utils.config import ConfigError, describe_config, load_config

OFFLINE_DEFAULTS = {
    "TOKENIZERS_PARALLELISM": "false",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
}


def run(config: RSConfig) -> dict:
    from RS.trainer import UnlearnTrainer

    trainer = UnlearnTrainer(config)
    try:
        return trainer.fit()
    finally:
        trainer.close()


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        from RS.losses import UNLEARN_LOSSES

        print(__doc__)
        print(f"losses: {', '.join(UNLEARN_LOSSES.names())}\n")
        print("\n".join(describe_config(RSConfig)))
        return
    for key, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)
    try:
        config = load_config(RSConfig, argv)
    except ConfigError as e:
        sys.exit(f"config error: {e}")
    try:
        run(config)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
