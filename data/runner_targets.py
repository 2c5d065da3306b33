"""Resolve RWKU targets for the shell runners: ``python -m data.runner_targets SPEC DATA_DIR [--fetch]``.

Prints one target folder name per line (e.g. ``1_Stephen_King``). A wrong target fails with a
one-line message listing the valid ones. ``--fetch`` first makes the files available (local
folder, else the Hugging Face Hub into ``--cache-dir``) and prints ``ROOT=<folder>`` first.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("targets", help='"1-10", "1,3", "Stephen King", "all"')
    parser.add_argument("data_dir", help="RWKU folder holding Target/ (may not exist yet with --fetch)")
    parser.add_argument("--fetch", action="store_true", help="download missing files into --cache-dir")
    parser.add_argument("--cache-dir", default="data/cache", help="download cache")
    parser.add_argument("--files", default="probes,mia,utility,rule", help="file groups (see data.download)")
    args = parser.parse_args(argv)
    from verl.utils.rwku_targets import select_targets

    try:
        root = args.data_dir
        if args.fetch:
            from pathlib import Path

            from data.download import fetch_rwku

            local = args.data_dir if Path(args.data_dir).is_dir() else None
            root = str(fetch_rwku(args.targets, args.cache_dir, files=args.files.split(","), local_dir=local))
            print(f"ROOT={root}")
        for target in select_targets(args.targets, root):
            print(target.dirname)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
