"""The pure core: every decision of a tick, from counters to a plan.

    sample (I/O) -> rates -> estimate -> assign -> place -> apply (I/O)
                    \\_____________ controller ______________/

Modules here import numpy, `wghybrid.model` and `wghybrid.policy` only: no asyncio,
sockets, files or `os` (tests/unit/test_core_pure.py enforces it), so that every decision
can be replayed from plain data.
"""
