"""``dtn-bench profile``: what a normaliser costs a whole model (parameters, MACs, throughput, latency, memory).

Modules:
    models: the profiled architectures (ViT zoo, DeiT-S, PVT-v2, Swin-T, LRA encoders), each built with any norm.
    normcost: the analytic count of the normalisers' own work (``norm_gmacs``).
    measure: the protocol, one process per configuration, out-of-memory halving; rows out.
    report: Table 1 layout, overhead, throughput and latency tables and plots, rendered from the rows.
"""
