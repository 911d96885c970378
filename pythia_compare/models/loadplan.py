"""Which llama.cpp load settings each model gets, per CPU and per phase (scoring, generation): the measured
tables and the rule (load_plan), and the reading of a CPU's description (parse_cpu).

Pure: no llama_cpp, no I/O. engine.py binds it to this machine (engine.cpu_info, engine.load_plan) and loads
models accordingly; every run records the decision per variant (the run JSON's "load", docs/run.md).
"""

from __future__ import annotations

from ..config import Settings

# ggml's CPU backend can copy some weight types into an interleaved ("repacked") layout when a model is loaded
# with use_extra_bufts on (llama.cpp's default, llama-perplexity's unless --no-repack). On x86 it repacks
# Q4_0, Q4_K, IQ4_NL and MXFP4 (AVX2) and Q2_K (AVX-512) tensors; Q8_0, Q5_K and Q6_K stay as they are. The
# effect is not one-way and not the same on every CPU (benchmarks/bench_repack.py measures it, Pythia-410M
# shapes, ctx 512). Q4_K_M: scoring (prompt processing) 36% slower repacked on an AVX-512 AMD EPYC and 27% slower
# on an AVX-512 Intel Xeon without AMX; generation 17% faster on that EPYC and 5% faster on that Xeon (2 threads,
# wall time, a quiet machine: 45.0 vs 42.6 tok/s). Q4_0 on that Xeon: scoring 34% and generation 14% faster
# repacked. Q2_K on that Xeon: both slower (11%, 3%; single-threaded CPU time). The quants each
# phase is faster repacked for, by CPU vendor (x86 without AMX; a vendor or quant not listed: the plain layout).
# Where generation is listed and scoring is not, generation gets a second, repacked handle.
REPACK_SCORE = {"GenuineIntel": frozenset({"Q4_0"})}
REPACK_GENERATE = {"AuthenticAMD": frozenset({"Q4_K_M", "Q4_K_S"}), "GenuineIntel": frozenset({"Q4_0", "Q4_K_M"})}
_FLOAT_TYPES = {"F32", "F16", "BF16"}


def parse_cpu(cpuinfo: str, ggml: str, machine: str) -> dict:
    """cpu_info's reading of /proc/cpuinfo's text, llama.cpp's system info line and the machine name. AMX counts
    when the first CPU's flags list amx_tile, amx_int8 or amx_bf16 (any amx_* flag) or ggml reports an AMX
    kernel (AMX_INT8 = 1)."""
    model, vendor, flags = "unknown CPU", "", set()
    for line in cpuinfo.splitlines():
        if line.startswith("model name") and model == "unknown CPU":
            model = line.split(":", 1)[1].strip()
        elif line.startswith("vendor_id") and not vendor:
            vendor = line.split(":", 1)[1].strip()
        elif line.startswith("flags") and not flags:
            flags = set(line.split(":", 1)[1].split())
    amx_flags = sorted(f for f in flags if f.startswith("amx"))
    amx = bool(amx_flags) or "AMX_INT8 = 1" in ggml
    x86 = machine.lower() in {"x86_64", "amd64", "i686", "i386"}
    isa = next((n for n in ("avx512f", "avx2") if n in flags), "")
    summary = f"{model} ({'AMX' if amx else 'no AMX'}{', ' + isa if isa else ''})"
    return {"model": model, "vendor": vendor, "amx": amx, "amx_flags": amx_flags, "ggml": ggml, "x86": x86,
            "summary": summary}


def load_plan(settings: Settings, quant: str | None, phase: str, cpu: dict) -> dict:
    """The fastest safe llama.cpp load settings for one phase ("score" or "generate") of a model of this quant
    (a QUANTS name; None when not known yet): {"extra_bufts": bool, "reason": str}.

    - AMX CPUs: always off. ggml's AMX matmul crashes on quantized weights, and nothing is repacked for floats.
    - Settings.extra_bufts forces it on for both phases (except on AMX).
    - Generation, Settings.generation_handle: "off" keeps the scoring handle's settings; "on" asks for a repacked
      handle for every quantized model; "auto" (default) for the quants measured faster on this CPU's vendor
      (REPACK_GENERATE). Scoring: as measured (REPACK_SCORE). Float models and non-x86 CPUs: off.
    cpu: a parse_cpu dict (engine.cpu_info() for this machine).
    """
    if phase not in ("score", "generate"):
        raise ValueError(f"phase must be 'score' or 'generate', not {phase!r}")
    if cpu["amx"]:
        return {"extra_bufts": False, "reason": "AMX CPU: extra buffer types stay off (AMX crashes on quantized "
                                                "weights)"}
    if settings.extra_bufts:
        return {"extra_bufts": True, "reason": "Settings.extra_bufts forces extra buffer types on"}
    mode = str(settings.generation_handle).lower()
    if phase == "generate" and mode == "off":
        return load_plan(settings, quant, "score", cpu)
    if not cpu["x86"]:
        return {"extra_bufts": False, "reason": "not measured on this CPU kind: llama.cpp's plain layout"}
    if quant is None or quant in _FLOAT_TYPES:
        return {"extra_bufts": False, "reason": f"{quant or 'quant unknown'}: nothing to repack"}
    if phase == "generate" and mode == "on":
        return {"extra_bufts": True, "reason": f"{quant} generation repacked: Settings.generation_handle is on"}
    table = (REPACK_SCORE if phase == "score" else REPACK_GENERATE).get(cpu.get("vendor", ""), frozenset())
    work = "scoring" if phase == "score" else "generation"
    where = f"{cpu.get('vendor') or 'this'} x86 CPU without AMX"
    if quant in table:
        return {"extra_bufts": True, "reason": f"{quant} {work} is faster with repacked weights ({where})"}
    return {"extra_bufts": False, "reason": f"{quant} {work}: repacking was not measured faster ({where})"}
