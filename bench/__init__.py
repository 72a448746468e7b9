"""The benchmark harness: the pipeline against the bare requests it has to make, on one machine.

``python -m bench`` runs it (see ``bench/README.md``); ``python -m bench.floor`` is the
bare-requests client it measures the pipeline against.
"""
