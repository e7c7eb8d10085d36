"""`imagenette-lab audit`: duplicates and train/val leakage, likely label errors, odd images."""

from __future__ import annotations

import argparse
import sys

# Distinct from 1 (bad input) so a CI job can tell "leakage found" from "audit could not run".
LEAKAGE_EXIT_CODE = 3


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "audit",
        help="find duplicates/leakage across splits, likely label errors and odd images",
        description="Audit ROOT/<split>/<class>/<image>: exact (file hash), perceptual (pHash+dHash) and "
        "embedding (cosine) duplicates within and across splits; likely label errors (out-of-fold "
        "logistic regression on frozen embeddings, ranked by cleanlab); tiny, extreme-aspect, near-blank, "
        "greyscale, EXIF-rotated and unreadable images. Writes duplicates.csv, label_issues.csv, "
        "odd_images.csv, two galleries and summary.json into OUT; a rerun reuses OUT/cache.",
    )
    p.add_argument("--root", required=True, help="dataset folder holding <split>/<class>/")
    p.add_argument("--out", default="runs/audit", help="output folder (default: %(default)s)")
    p.add_argument("--splits", nargs="+", metavar="SPLIT", help="splits to audit (default: all)")
    p.add_argument("--model", default="efficientnet_lite0",
                   help="embedding backbone (pretrained, frozen), or 'pixels' for a weight-free "
                   "16x16 pixel embedding: seconds, for tests and exact/resized copies only (photos on plain "
                   "backgrounds reach cosine 0.98 there, so raise --cos-min to ~0.995) (default: %(default)s)")
    p.add_argument("--img-size", type=int, help="embedding input size (default: the model's own)")
    p.add_argument("--batch-size", type=int, default=64, help="embedding batch size (default: %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="decoding processes (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda[:N] (default: %(default)s)")
    p.add_argument("--amp", default="off", choices=["auto", "bf16", "fp16", "off"],
                   help="autocast for the embedding pass (default: %(default)s: exact fp32 cosines)")
    p.add_argument("--seed", type=int, default=0, help="seed of the k-fold split (default: %(default)s)")
    g = p.add_argument_group("thresholds")
    g.add_argument("--cos-min", type=float, default=0.92,
                   help="embedding near-duplicate: cosine of the embeddings >= this (default: %(default)s)")
    g.add_argument("--phash-max", type=int, default=8,
                   help="perceptual duplicate: pHash Hamming distance <= this (of 64 bits) ... (default: %(default)s)")
    g.add_argument("--dhash-max", type=int, default=8,
                   help="... and dHash distance <= this (default: %(default)s)")
    g.add_argument("--top-k", type=int, default=5, help="neighbours kept per image and method (default: %(default)s)")
    g.add_argument("--folds", type=int, default=5, help="k of the out-of-fold probabilities (default: %(default)s)")
    g.add_argument("--no-label-check", action="store_true", help="skip the label-error step")
    g.add_argument("--min-side", type=int, default=64, help="'tiny' below this many px (default: %(default)s)")
    g.add_argument("--max-aspect", type=float, default=3.0, help="'extreme aspect' above (default: %(default)s)")
    g.add_argument("--blank-std", type=float, default=2.0,
                   help="'near blank' when the luma std (0-255) is below (default: %(default)s)")
    p.add_argument("--gallery", type=int, default=12, help="images/pairs per gallery (default: %(default)s)")
    p.add_argument("--fail-on-leakage", action="store_true",
                   help=f"exit with code {LEAKAGE_EXIT_CODE} when any cross-split duplicate is found (for CI)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from imagenette_lab.audit.core import AuditConfig, run_audit
    from imagenette_lab.audit.odd import OddLimits
    from imagenette_lab.errors import UsageError

    if args.folds < 2 or args.top_k < 1 or args.gallery < 0 or args.batch_size < 1 or args.workers < 0:
        raise UsageError("--folds must be >= 2, --top-k >= 1, --gallery >= 0, --batch-size >= 1, --workers >= 0")
    if not -1.0 <= args.cos_min <= 1.0:
        raise UsageError(f"--cos-min must be in [-1, 1], got {args.cos_min}")
    cfg = AuditConfig(
        root=args.root, out=args.out, splits=args.splits, model=args.model, img_size=args.img_size,
        batch_size=args.batch_size, workers=args.workers, device=args.device, amp=args.amp, seed=args.seed,
        phash_max=args.phash_max, dhash_max=args.dhash_max, cos_min=args.cos_min, top_k=args.top_k,
        folds=args.folds, label_check=not args.no_label_check, gallery=args.gallery,
        limits=OddLimits(min_side=args.min_side, max_aspect=args.max_aspect, blank_std=args.blank_std))
    s = run_audit(cfg)
    d, lab, odd = s["duplicates"], s["label_issues"], s["odd_images"]["counts"]
    per_split = ", ".join(f"{k} {v['images']}" for k, v in s["splits"].items())
    print(f"images: {s['images']} ({per_split})")
    print("duplicate pairs: " + ", ".join(f"{k} {v}" for k, v in d["pairs"].items())
          + f" (exact {sum(d['by_method']['exact'].values())}, label conflicts {d['label_conflicts']})")
    if "skipped" in lab:
        print(f"label check: {lab['skipped']}")
    else:
        print(f"likely label errors: {lab['issues']} of {lab['images']} "
              f"(out-of-fold accuracy {lab['oof_accuracy']:.3f}, {lab['folds']} folds)")
    for note in lab.get("notes", []):
        print(f"note: {note}")
    totals = {k: sum(v.get(k, 0) for v in odd.values()) for k in next(iter(odd.values()), {})}
    print("odd images: " + ", ".join(f"{k} {v}" for k, v in totals.items()))
    print(f"time {s['timings_s']['total']:.1f}s, peak RSS {s['peak_rss_mb']['main']:.0f} MB; "
          f"audit written to {args.out}")
    leak = s["leakage"]["cross_split_pairs"]
    if args.fail_on_leakage and leak:
        where = ", ".join(f"{k} {v}" for k, v in s["leakage"]["by_split_pair"].items() if v)
        print(f"imagenette-lab audit: leakage: {leak} cross-split duplicate pair(s) ({where}); "
              f"see {args.out}/duplicates.csv", file=sys.stderr)
        return LEAKAGE_EXIT_CODE
    return 0
