"""The models wing: everything that runs llama.cpp.

Owns one loaded model and what it computes (engine: scoring, generation, tokenizing), how a file is loaded on
this CPU (loadplan), reading a GGUF header (ggufmeta), llama.cpp's quantizer (quantize) and the residual stream read through llama.cpp's
eval callback for the logit lens (lenscapture). The only wing that
imports llama_cpp.

May import: the shared base (config, errors, params, files, threads, variants). Must never import sources,
runs, sweeps, web or an entry point (cli, api): it knows files, not specs, runs or pages.
"""
