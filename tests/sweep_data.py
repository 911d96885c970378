"""Sweep JSON dicts shaped like docs/sweeps.md, for the sweep plot and view tests: a seeded factory.

Numbers are self-consistent: a cell's ln_ratio is ln(its PPL / its step's reference PPL), the reference quant's
own cells have no KL statistics, and PPL falls with training and rises as bits per weight fall.
"""

from __future__ import annotations

import math

import numpy as np

from pythia_compare.variants import QUANTS

DEMO_STEPS = [0, 25, 100, 300, 800]
DEMO_QUANTS = ["F16", "Q8_0", "Q6_K", "Q4_K_M", "Q3_K_M", "Q2_K"]


def make_sweep(steps=DEMO_STEPS, quants=DEMO_QUANTS, *, reference="F16", seed=0, failed=(), pending=(),
               hub_quants=(), sweep_id="sw_test0000000001") -> dict:
    rng = np.random.default_rng(seed)
    cells = []
    for step in steps:
        ref_ppl = 4000.0 / (1.0 + step) ** 0.6 + 3.0
        for q in quants:
            for hub in ([False, True] if q in hub_quants and step == max(steps) else [False]):
                cell = {"step": step, "quant": q, "status": "done", "run_id": f"run{step}{q}{'h' if hub else ''}",
                        "error": None, "hub": hub, "bpw": QUANTS[q].bpw}
                if (step, q) in failed and not hub:
                    cell.update(status="failed", run_id=None, error="download failed: 503 from the Hub")
                elif (step, q) in pending and not hub:
                    cell.update(status="pending", run_id=None)
                if cell["status"] != "done":
                    cell.update(ppl=None, ppl_err=None, kld_mean=None, kld_mean_err=None, kld_p99=None,
                                ln_ratio=None, ln_ratio_err=None)
                    cells.append(cell)
                    continue
                worse = (16.0 / QUANTS[q].bpw - 1.0) * 0.01 * (1.0 + rng.uniform(0, 0.2)) + (0.003 if hub else 0)
                ppl = ref_ppl * math.exp(worse) if q != reference else ref_ppl
                cell.update(ppl=ppl, ppl_err=ppl * 0.02)
                if q == reference and not hub:
                    cell.update(kld_mean=None, kld_mean_err=None, kld_p99=None, ln_ratio=None, ln_ratio_err=None)
                else:
                    kld = worse * 0.5 + 1e-5
                    cell.update(kld_mean=kld, kld_mean_err=kld * 0.05, kld_p99=kld * 9.0,
                                ln_ratio=math.log(ppl / ref_ppl), ln_ratio_err=0.001)
                cells.append(cell)
    done = sum(c["status"] == "done" for c in cells)
    return {"schema": 1, "sweep_id": sweep_id, "name": "demo grid", "created_at": "2026-11-28T08:00:00+00:00",
            "repo": "demo", "steps": list(steps), "quants": list(quants), "reference": reference, "ctx": 64,
            "max_chunks": 2, "text_sha256": "ab" * 32, "n_tokens": 5939, "cells": cells, "done": done,
            "total": len(cells), "failed": sum(c["status"] == "failed" for c in cells)}


def cell(sweep: dict, step: int, quant: str, hub: bool = False) -> dict:
    found = [c for c in sweep["cells"] if c["step"] == step and c["quant"] == quant and bool(c["hub"]) == hub]
    assert len(found) == 1
    return found[0]
