"""``python -m bench`` (``make bench``): measure Moonslot against its own stack's limit.

The harness starts the site under gunicorn as production runs it, measures a bare DRF endpoint
as the baseline in the same run, drives each scenario from a separate load generator, and
reports every figure beside its ratio to the baseline (see ``bench.cli``).
"""
