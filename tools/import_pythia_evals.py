"""Rebuild the bundled published numbers (assets/published/pythia-410m-deduped-evals.json) from a checkout of
EleutherAI/pythia (https://github.com/EleutherAI/pythia, Apache-2.0).

Owns reading the repo's lm-evaluation-harness result files for Pythia-410M-deduped, keeping the main tasks with
their standard errors, mapping each file to its Hugging Face repo and Hub step, and writing one small JSON with
its provenance (repo, commit, paths, license). Never touches the network and is never imported by
pythia_compare (pythia_compare/runs/published.py reads what this writes).

    evals/pythia-v0/pythia-410m-deduped/{zero-shot,five-shot}/
        pythia-410m-deduped-{0,5}shot-global_step{N}_eval_results_<date>.json
        -> EleutherAI/pythia-410m-deduped-v0, Hub step 2N (the v0 410M ran 71,500 steps at a 4M-token batch;
           its Hub branches are named for 2M-token steps, as the pythia README says: global_step71500 = step143000)
    evals/pythia-v1/pythia-410m-deduped/{zero-shot,five-shot}/410m-deduped[-5shot]_step{N}.json
        -> EleutherAI/pythia-410m-deduped, Hub step N
    baseline/ and intervention/ (the bias case study) are left out. A file is filed under the num_fewshot its own
    config records: the v0 five-shot/ files record num_fewshot 0, so they are left out (listed with the reason).

Usage (a work tree, or a bare git dir such as the `fetch` tool's snapshot):
    python tools/import_pythia_evals.py --tree ~/src/pythia [--commit SHA]
    python tools/import_pythia_evals.py --git-dir /work/.mirror/EleutherAI+pythia/repo [--commit HEAD]
    ... -o OUT  (default: assets/published/pythia-410m-deduped-evals.json)
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "assets" / "published" / "pythia-410m-deduped-evals.json"
SOURCE_REPO = "https://github.com/EleutherAI/pythia"
LICENSE = "Apache-2.0"
FORMAT = 1

# task -> the metrics kept (each with its "<metric>_stderr" when the file has one)
TASKS: dict[str, list[str]] = {
    "lambada_openai": ["acc", "ppl"],
    "piqa": ["acc", "acc_norm"],
    "winogrande": ["acc"],
    "arc_easy": ["acc", "acc_norm"],
    "arc_challenge": ["acc", "acc_norm"],
    "sciq": ["acc", "acc_norm"],
    "logiqa": ["acc", "acc_norm"],
    "wsc": ["acc"],
    "wikitext": ["word_perplexity", "bits_per_byte"],
}

# (Hub repo, folder under evals/, file-name pattern, Hub step from the number in the name, the rule in words)
RUNS = [
    ("EleutherAI/pythia-410m-deduped-v0", "evals/pythia-v0/pythia-410m-deduped",
     re.compile(r"^pythia-410m-deduped-(\d)shot-global_step(\d+)_eval_results_[\d-]+\.json$"), lambda n: 2 * n,
     "Hub step = 2 x global_step: the v0 410M models ran 71,500 steps at a 4M-token batch and their Hub "
     "branches are named for 2M-token steps (pythia README), so global_step71500 is step143000"),
    ("EleutherAI/pythia-410m-deduped", "evals/pythia-v1/pythia-410m-deduped",
     re.compile(r"^410m-deduped(?:-(\d)shot)?_step(\d+)\.json$"), lambda n: n,
     "Hub step = the file's step (the files name pythia-v1.1-410m-deduped, today's EleutherAI/pythia-410m-deduped)"),
]
SHOT_DIRS = {"zero-shot": 0, "five-shot": 5}
CAVEATS = [
    "step0 and step1 of the current models have identical weights, and so identical scores (EleutherAI/pythia#83).",
    "The v0 files under five-shot/ record num_fewshot 0 in their own config: they are not five-shot results, "
    "and are left out (left_out lists them).",
    "v0 and the current models are different training runs; their numbers are never mixed.",
    "The v0 files record lm-eval run through GPT-NeoX (config model 'neox'), the current ones lm-eval's "
    "'hf-causal' model.",
]


class Checkout:
    """Reads files of the pythia repo from a work tree or from a git dir at one commit."""

    def __init__(self, tree: Path | None, git_dir: Path | None, commit: str | None):
        self.tree, self.git_dir = tree, git_dir
        if git_dir is not None:
            self.commit = self._git("rev-parse", "--verify", f"{commit or 'HEAD'}^{{commit}}").strip()
        elif commit:
            self.commit = commit
        else:
            try:
                self.commit = subprocess.run(["git", "-C", str(tree), "rev-parse", "HEAD"], check=True,
                                             capture_output=True, text=True).stdout.strip()
            except (OSError, subprocess.CalledProcessError):
                raise SystemExit(f"{tree} is not a git work tree; say which commit it is with --commit SHA") from None

    def _git(self, *args: str) -> str:
        try:
            return subprocess.run(["git", f"--git-dir={self.git_dir}", *args], check=True, capture_output=True,
                                  text=True).stdout
        except subprocess.CalledProcessError as e:
            raise SystemExit(f"git {' '.join(args)} in {self.git_dir} failed: {e.stderr.strip()}") from None

    def list(self, folder: str) -> list[str]:
        """Every file path under `folder` (repo-relative, '/'-separated)."""
        if self.git_dir is not None:
            return [p for p in self._git("ls-tree", "-r", "--name-only", self.commit, "--", folder).splitlines() if p]
        base = self.tree / folder
        if not base.is_dir():
            return []
        return sorted(p.relative_to(self.tree).as_posix() for p in base.rglob("*") if p.is_file())

    def read(self, path: str) -> str:
        if self.git_dir is not None:
            return self._git("show", f"{self.commit}:{path}")
        return (self.tree / path).read_text(encoding="utf-8")


def _kept(results: dict) -> dict:
    """The kept tasks and metrics of one file's "results": {task: {metric: value, metric_stderr: value}}."""
    out: dict = {}
    for task, metrics in TASKS.items():
        got = results.get(task)
        if not isinstance(got, dict):
            continue
        row = {}
        for m in metrics:
            if isinstance(got.get(m), (int, float)):
                row[m] = got[m]
                if isinstance(got.get(f"{m}_stderr"), (int, float)):
                    row[f"{m}_stderr"] = got[f"{m}_stderr"]
        if row:
            out[task] = row
    return out


def build(src: Checkout) -> dict:
    """The bundle: provenance, the kept tasks, and per Hub repo its files' scores by Hub step."""
    runs: dict = {}
    n_files = 0
    for repo, folder, pattern, hub_step, rule in RUNS:
        files, left_out = [], []
        for path in src.list(folder):
            parts = path[len(folder) + 1:].split("/")
            if len(parts) != 2 or parts[0] not in SHOT_DIRS:
                continue  # baseline/, intervention/ and anything else
            m = pattern.match(parts[1])
            if not m:
                raise SystemExit(f"{path}: a file name this tool does not know; update RUNS in {Path(__file__).name}")
            doc = json.loads(src.read(path))
            shots = doc.get("config", {}).get("num_fewshot")
            if shots != SHOT_DIRS[parts[0]]:
                left_out.append({"path": path, "why": f"in {parts[0]}/ but its config records num_fewshot {shots}"})
                continue
            source_step = int(m.group(2))
            files.append({"step": hub_step(source_step), "source_step": source_step, "num_fewshot": shots,
                          "path": path, "scores": _kept(doc.get("results", {}))})
            n_files += 1
        files.sort(key=lambda f: (f["num_fewshot"], f["step"]))
        runs[repo] = {"folder": folder, "step_rule": rule, "files": files, "left_out": left_out}
    if not n_files:
        raise SystemExit("no result files found under evals/pythia-v0/pythia-410m-deduped or "
                         "evals/pythia-v1/pythia-410m-deduped; is this a checkout of EleutherAI/pythia?")
    return {"format": FORMAT,
            "what": "EleutherAI's published lm-evaluation-harness results for Pythia-410M-deduped, by Hub repo "
                    "and Hub step (the main tasks, with their standard errors)",
            "source": {"repo": SOURCE_REPO, "commit": src.commit, "license": LICENSE,
                       "made_by": "tools/import_pythia_evals.py",
                       "folders": [folder for _, folder, *_ in RUNS]},
            "tasks": TASKS, "caveats": CAVEATS, "runs": runs}


def dumps(bundle: dict) -> str:
    """The bundle as text: one result file per line, so diffs read file by file."""
    lines = ["{"]
    top = [k for k in bundle if k != "runs"]
    for k in top:
        lines.append(f" {json.dumps(k)}: {json.dumps(bundle[k], ensure_ascii=False)},")
    lines.append(' "runs": {')
    repos = list(bundle["runs"])
    for i, repo in enumerate(repos):
        run = bundle["runs"][repo]
        lines.append(f"  {json.dumps(repo)}: {{")
        for k in ("folder", "step_rule", "left_out"):
            lines.append(f"   {json.dumps(k)}: {json.dumps(run[k], ensure_ascii=False)},")
        lines.append('   "files": [')
        rows = [f"    {json.dumps(f, ensure_ascii=False)}" for f in run["files"]]
        lines.append(",\n".join(rows))
        lines.append("   ]")
        lines.append("  }" + ("," if i < len(repos) - 1 else ""))
    lines.append(" }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--tree", type=Path, help="a work tree of EleutherAI/pythia")
    where.add_argument("--git-dir", type=Path, help="a git dir of EleutherAI/pythia (bare is fine)")
    ap.add_argument("--commit", help="the commit to read (git dir: default HEAD; work tree: default its HEAD)")
    ap.add_argument("-o", "--out", type=Path, default=DEFAULT_OUT, help=f"default {DEFAULT_OUT.relative_to(ROOT)}")
    a = ap.parse_args(argv)
    bundle = build(Checkout(a.tree, a.git_dir, a.commit))
    text = dumps(bundle)
    json.loads(text)  # the hand-made layout is still JSON
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(text, encoding="utf-8")
    n = sum(len(r["files"]) for r in bundle["runs"].values())
    print(f"wrote {a.out} ({len(text.encode()):,} bytes): {n} result files of commit {bundle['source']['commit']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
