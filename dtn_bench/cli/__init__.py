"""The ``dtn-bench`` command line (:mod:`dtn_bench.cli.app`): one module per command group."""
