"""Train the sample-quality judge (an MNIST digit classifier) and cache it where the evaluator looks.

    python scripts/train_judge.py            # trains runs/judge/judge.ckpt unless it exists
    python scripts/train_judge.py --force    # retrains it

Deterministic given --seed on one machine, torch build and CPU thread count (OMP_NUM_THREADS).
Prints the test accuracy on grey-scale and on threshold-binarized MNIST; exits with status 1 if
the grey-scale accuracy is below the required 99.0% (the checkpoint is still written, so it can
be inspected).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from shared.judge import DEFAULT_JUDGE_PATH, load_judge, save_judge, train_judge

REQUIRED_ACCURACY = 0.99


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", default=str(DEFAULT_JUDGE_PATH))
    parser.add_argument("--force", action="store_true", help="retrain even if the checkpoint exists")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--data_dir", default=None, help="folder holding MNIST/raw (default: the bundled copy)")
    args = parser.parse_args(argv)
    if args.epochs <= 0:
        parser.error(f"--epochs must be positive, got {args.epochs}")

    if Path(args.path).is_file() and not args.force:
        record = load_judge(args.path)[1]
        print(f"Judge already at {args.path} (test accuracy {record['test_accuracy']:.4f}); --force retrains it")
        return record
    start = time.perf_counter()
    judge, record = train_judge(seed=args.seed, epochs=args.epochs, data_dir=args.data_dir, verbose=True)
    save_judge(judge, record, args.path)
    print(f"Judge saved to {args.path} after {time.perf_counter() - start:.0f} s\n"
          f"  test accuracy, grey-scale MNIST:           {record['test_accuracy']:.4f}\n"
          f"  test accuracy, threshold-binarized MNIST:  {record['test_accuracy_binarized']:.4f}")
    if record["test_accuracy"] < REQUIRED_ACCURACY:
        sys.exit(f"error: test accuracy {record['test_accuracy']:.4f} is below the required {REQUIRED_ACCURACY}")
    return record


if __name__ == "__main__":
    main()
