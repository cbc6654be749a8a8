#!/usr/bin/env python3
"""Summarizes an Nsight Compute source page (ncu -i REP --page source --csv
--print-source sass): warp samples by stall reason over the kernel, and the
instructions holding the most samples with their main stall reasons.

  ncu_hotspots.py src.csv [--top 40]
"""
import argparse
import csv
import sys


def num(v):
    try:
        return float(str(v).replace(",", ""))
    except ValueError:
        return 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("--top", type=int, default=40)
    args = ap.parse_args()
    with open(args.csv, newline="") as f:
        lines = f.read().splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith('"Address"'))
    rows = list(csv.DictReader(lines[start:]))
    reasons = [k for k in rows[0] if k.startswith("stall_") and "Not Issued" not in k]
    total = sum(num(r["Warp Stall Sampling (All Samples)"]) for r in rows)
    by_reason = {k: sum(num(r[k]) for r in rows) for k in reasons}
    print(f"{len(rows)} instructions, {total:.0f} warp samples")
    for k, v in sorted(by_reason.items(), key=lambda kv: -kv[1])[:12]:
        print(f"  {k[6:]:<18} {v:8.0f} {100 * v / max(total, 1):5.1f}%")
    print(f"\ntop {args.top} instructions by samples (share, main stalls):")
    top = sorted(rows, key=lambda r: -num(r["Warp Stall Sampling (All Samples)"]))[: args.top]
    for r in sorted(top, key=lambda r: int(r["Address"], 16) if r["Address"].startswith("0x") else 0):
        s = num(r["Warp Stall Sampling (All Samples)"])
        main = sorted(((num(r[k]), k[6:]) for k in reasons), reverse=True)[:2]
        why = ", ".join(f"{n} {v:.0f}" for v, n in main if v > 0)
        print(f"{r['Address']:>8} {100 * s / max(total, 1):5.1f}%  {r['Source'][:60]:<60} {why}")


if __name__ == "__main__":
    sys.exit(main())
