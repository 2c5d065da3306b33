"""Standalone evaluation: ``python3 -m verl.eval --model PATH --benchmark rwku --targets 1-10 --data-dir DIR ...``.

Writes ``<out>/<model_tag>/<target>.json`` per target (every metric, every probe's prompt / generation /
score) and ``<out>/<model_tag>/summary.{md,csv}`` (RWKU Table 1 or MUSE columns), and prints the table;
with the ``attacks`` suite also ``<out>/<model_tag>/attacks.{md,csv}`` (one row per target).
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional

DEFAULT_SUITES = {"rwku": "forget,neighbor,mia,utility", "muse": "muse_verbmem,muse_knowmem,muse_privleak"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python3 -m verl.eval",
        description="Evaluate a causal LM on RWKU (per target) or MUSE-Books and write JSON results + summary tables.",
    )
    parser.add_argument(
        "--model", required=True, help="HF model folder, 'smollm2' (embedded SmolLM2-135M-Instruct) or 'tiny:<dir>'"
    )
    parser.add_argument(
        "--model-name", default=None, help="name used for the output folder (default: the model folder's name)"
    )
    parser.add_argument("--benchmark", choices=["rwku", "muse"], default="rwku", help="benchmark (default: rwku)")
    parser.add_argument(
        "--data-dir",
        required=True,
        help="RWKU: folder holding Target/<n>_<Name>/; MUSE: the books folder (or its parent)",
    )
    parser.add_argument(
        "--targets", default="1", help="RWKU targets: '1-10', '1,3,5', 'Stephen King' or 'all' (ignored for MUSE)"
    )
    parser.add_argument(
        "--suite",
        default=None,
        help="comma-separated suites (RWKU: forget, neighbor, boundary, mia, utility = mmlu+bbh+truthfulqa+triviaqa+fluency, "
        "naturalness, attacks; MUSE: muse_verbmem, muse_knowmem, muse_privleak, muse_naturalness). "
        f"Default: RWKU {DEFAULT_SUITES['rwku']}; MUSE {DEFAULT_SUITES['muse']}",
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--icu", action="store_true", help="RWKU ICU baseline: prepend the unlearning instruction to every probe"
    )
    parser.add_argument(
        "--batch-size", type=int, default=16, help="prompts per generation / next-token batch (default 16)"
    )
    parser.add_argument(
        "--score-batch-size", type=int, default=None, help="texts per log-prob batch (default: --batch-size)"
    )
    parser.add_argument("--max-probes", type=int, default=None, help="debug: only the first N records of every file")
    parser.add_argument(
        "--skip-missing",
        action="store_true",
        help="skip suites whose files a target lacks (e.g. utility beyond targets 1-2 of the sample data)",
    )
    parser.add_argument(
        "--attacks",
        default=None,
        help="attacks suite: comma-separated attacks (default all: direct, prefill, prefill_answer, multi_turn, "
        "quant8, quant4, relearn, relearn_benign, knowledge)",
    )
    parser.add_argument(
        "--attack-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="attacks suite setting (repeatable), e.g. relearn_steps=4, relearn_lr=2e-5, neighbor_probes=10, "
        "quant_group_size=64 (all keys: verl/eval/attack_config.py)",
    )
    parser.add_argument("--max-new-tokens-cap", type=int, default=None, help="debug: cap every suite's max_new_tokens")
    parser.add_argument("--dtype", default="auto", help="auto (fp32 on CPU, bf16 on GPU), fp32, bf16 or fp16")
    parser.add_argument(
        "--bbh-legacy-char-em", action="store_true", help="BBH EM over the answer's characters (RWKU paper numbers)"
    )
    parser.add_argument(
        "--fluency-tokenizer",
        default="regex",
        choices=["regex", "treebank", "nltk"],
        help="word tokenizer for fluency entropy",
    )
    parser.add_argument(
        "--no-newline-stop", action="store_true", help="do not stop forget/neighbor generations at a newline"
    )
    parser.add_argument(
        "--knowmem-icl-type", default="default", choices=["default", "train"], help="MUSE KnowMem ICL shots"
    )
    parser.add_argument(
        "--muse-corpus", default="books", choices=["books", "news"], help="MUSE corpus (PrivLeak reference AUC)"
    )
    parser.add_argument(
        "--privleak-auc-retrain",
        type=float,
        default=None,
        help="PrivLeak's reference AUC of a model never trained on the forget split (default: MUSE's published "
        "retrained-model value for --muse-corpus); the embedded book uses its untaught model's AUC",
    )
    parser.add_argument(
        "--add-special-tokens",
        action="store_true",
        help="let the tokenizer add BOS to chat prompts (RWKU's double-BOS on Llama-3)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (1 is much faster on a busy machine)"
    )
    parser.add_argument(
        "--refusal-detector",
        default="strict",
        choices=["rule", "strict", "judge"],
        help="detector behind every refusal figure (naturalness): strict (default; the refusal must be the reply's "
        "stance), rule (RULE's reward regex) or judge (a chat model asked yes/no, --judge-model); recorded in "
        "every result JSON",
    )
    parser.add_argument("--judge-model", default=None, help="HF chat model for --refusal-detector judge")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from tqdm.auto import tqdm

    from verl.eval.attack_table import write_attack_tables
    from verl.eval.report import model_tag, summary_table, to_markdown, write_result, write_summary
    from verl.eval.suites import EvalOptions, expand_suites, run_suites

    suites = (args.suite or DEFAULT_SUITES[args.benchmark]).split(",")
    attack = dict(option.partition("=")[::2] for option in args.attack_option)
    if any("=" not in option for option in args.attack_option):
        parser.exit(2, f"error: --attack-option expects KEY=VALUE, got {args.attack_option!r}\n")
    if args.attacks:
        attack["attacks"] = args.attacks
    try:
        options = EvalOptions(
            icu=args.icu,
            max_probes=args.max_probes,
            bbh_legacy_char_em=args.bbh_legacy_char_em,
            fluency_tokenizer=args.fluency_tokenizer,
            rwku_newline_stop=not args.no_newline_stop,
            knowmem_icl_type=args.knowmem_icl_type,
            muse_corpus=args.muse_corpus,
            privleak_auc_retrain=args.privleak_auc_retrain,
            max_new_tokens_cap=args.max_new_tokens_cap,
            skip_missing=args.skip_missing,
            attack=attack,
            refusal_detector=args.refusal_detector,
            judge_model=args.judge_model,
        )
        expand_suites(args.benchmark, suites)
        if args.benchmark == "rwku":
            from verl.utils.rwku_targets import select_targets

            targets = select_targets(args.targets, args.data_dir)
        else:
            targets = [None]
    except (ValueError, FileNotFoundError) as error:
        parser.exit(2, f"error: {error}\n")

    from verl.eval.generator import HFGenerator

    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)

    generator = HFGenerator.from_pretrained(
        args.model,
        dtype=args.dtype,
        batch_size=args.batch_size,
        score_batch_size=args.score_batch_size,
        add_special_tokens=args.add_special_tokens,
        progress=not args.no_progress,
    )
    name = args.model_name or args.model
    results = []
    for target in tqdm(targets, desc="targets", disable=args.no_progress or len(targets) == 1):
        try:
            result = run_suites(generator, args.benchmark, args.data_dir, target, suites, options)
        except (ValueError, FileNotFoundError) as error:
            parser.exit(2, f"error: {error}\n")
        path = write_result(args.out, name, result)
        for suite, reason in result["skipped"].items():
            where = result["target"]["dirname"] if result["target"] else args.benchmark
            print(f"skipped {suite} for {where}: {reason}", file=sys.stderr)
        print(f"wrote {path}", file=sys.stderr)
        results.append(result)
    folder = path.parent
    markdown_path, csv_path = write_summary(folder, results, args.benchmark)
    print(to_markdown(*summary_table(results, args.benchmark)))
    print(f"wrote {markdown_path} and {csv_path} ({model_tag(name)})", file=sys.stderr)
    attack_rows = [(f"{r['target']['index']} {r['target']['name']}", r["metrics"]) for r in results if r["target"]]
    written = write_attack_tables(folder, attack_rows)
    if written:
        print("\n" + written[0].read_text(encoding="utf-8"))
        print(f"wrote {', '.join(str(p) for p in written)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
