"""Write assets/demo/lambada.jsonl: a small LAMBADA-format file made from the demo suite's own held-out text.

Not LAMBADA: the examples are pieces of assets/demo/heldout.txt (Python source), cut so that each one ends in a
word to predict, in the format of EleutherAI/lambada_openai (one {"text": ...} per line). It lets the demo suite
and the tests run `--scoring lambada` offline. Deterministic: the same heldout.txt gives the same file.

    python tools/make_demo_lambada.py [--out PATH] [--n 64]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DEMO = Path(__file__).resolve().parents[1] / "assets" / "demo"


def examples(text: str, n: int, lines_before: int = 6) -> list[str]:
    """Up to n texts: each ends at the end of a line whose last space-separated piece is a word of letters,
    digits and underscores, and holds the `lines_before` lines before it; spread evenly over the text."""
    lines = text.split("\n")
    ends = []
    for i, line in enumerate(lines):
        line = line.rstrip()
        last = line.split(" ")[-1]
        if i >= lines_before and " " in line.strip() and last.replace("_", "").isalnum():
            ends.append(i)
    step = max(1, len(ends) // n)
    out = []
    for i in ends[::step][:n]:
        piece = "\n".join(lines[i - lines_before:i] + [lines[i].rstrip()]).strip()
        if piece.split(" ")[:-1] and " ".join(piece.split(" ")[:-1]).strip():
            out.append(piece)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(DEMO / "lambada.jsonl"))
    ap.add_argument("--n", type=int, default=64)
    args = ap.parse_args()
    texts = examples((DEMO / "heldout.txt").read_text(encoding="utf-8"), args.n)
    Path(args.out).write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts),
                              encoding="utf-8")
    print(f"wrote {len(texts)} examples to {args.out}")


if __name__ == "__main__":
    main()
