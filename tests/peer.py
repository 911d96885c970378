"""Running llama.cpp's own `llama-perplexity` (built by tools/build_llama_perplexity.sh) and reading its output.
Shared by the peer tests and the benchmarks."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def llama_perplexity_bin() -> str:
    path = os.environ.get("PYTHIA_COMPARE_LLAMA_PERPLEXITY")
    if not path:
        path = subprocess.run(["bash", str(ROOT / "tools" / "build_llama_perplexity.sh")], check=True,
                              capture_output=True, text=True).stdout.strip().splitlines()[-1]
    assert Path(path).is_file(), f"llama-perplexity not found at {path}"
    return path


def run_tool(args: list[str], *, threads: int = 2, flash_attn: bool = False, timeout: int = 1800,
             until: str = r"Final estimate|Same top p\s*:") -> str:
    """Run llama-perplexity with the project's load settings (--no-repack = use_extra_bufts off).

    The tool logs through an asynchronous worker thread that is not flushed at exit, so on a busy machine
    its last lines (the final estimate, the statistics block) are sometimes lost. A run whose output lacks
    `until` is run again, up to 8 times.
    """
    cmd = [llama_perplexity_bin(), *args, "-t", str(threads), "--no-repack", "-fa", "on" if flash_attn else "off",
           "-ngl", "0"]
    for _ in range(8):
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
        assert proc.returncode == 0, f"llama-perplexity failed ({proc.returncode}): {proc.stdout[-3000:]}"
        if not until or re.search(until, proc.stdout):
            break
    return proc.stdout


_NUM = r"([-+]?[0-9.]+(?:e[-+]?\d+)?)"


def parse_final_ppl(out: str) -> tuple[float, float]:
    m = re.search(rf"Final estimate: PPL = {_NUM} \+/- {_NUM}", out)
    assert m, f"no final estimate in llama-perplexity output:\n{out[-2000:]}"
    return float(m.group(1)), float(m.group(2))


def parse_kl_block(out: str) -> dict[str, float]:
    """The statistics block of `--kl-divergence`: label -> value (percent for 'Same top p')."""
    stats = {}
    for label, key in [(r"Mean PPL\(Q\)\s*", "ppl"), (r"Mean PPL\(base\)\s*", "ppl_base"),
                       (r"Mean\s+KLD", "kld_mean"), (r"Median\s+KLD", "kld_median"), (r"Maximum KLD", "kld_max"),
                       (r"99\.0%\s+KLD", "kld_p99"), (r"Same top p", "same_top_pct"), (r"RMS Δp", "dp_rms"),
                       (r"Mean\s+Δp", "dp_mean")]:
        m = re.search(rf"{label}\s*:\s*{_NUM}", out)
        if m:
            stats[key] = float(m.group(1))
    return stats
