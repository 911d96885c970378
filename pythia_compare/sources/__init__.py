"""The sources wing: a variant spec to a vetted local GGUF file.

Owns the Hub (hub: the only module that touches the network), checkpoints read without pickle code
(checkpoint), conversion to GGUF (convert, vocab), the spec resolver (resolver), the cache of converted and
quantized files (cache), which runs mix model lineages (lineage), what public mode allows (policy), and the
throwaway first load of a file in a subprocess (probe).

May import: models (the engine for the probe's child, the quantizer) and the shared base. Must never import
runs, sweeps, web or an entry point: it makes files, it never scores them.
"""
