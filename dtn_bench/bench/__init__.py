"""Benchmark suites: what the normalisers, the LRA attentions and the ImageNet-C generator cost."""
