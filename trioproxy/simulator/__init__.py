"""A fake of the paid LLM providers: their exact wire formats, over real sockets, with faults.

Used by the test suite, the gateway's demo mode and load tests::

    sim = Simulator(api_key="sk-test")
    port = await nursery.start(sim.serve)          # 127.0.0.1:<port>
    ...                                            # POST /v1/chat/completions, /v1/messages
    sim.stats.output_tokens                        # tokens actually written to sockets

Faults per request (``x-sim-fault: ttft_ms=200;status=429``) or per instance
(:class:`Fault`, ``POST /_sim/faults``); see :mod:`.faults` and :mod:`.stats`.
"""

from __future__ import annotations

from trioproxy.simulator.faults import Fault, FaultError
from trioproxy.simulator.server import MODELS, Simulator, main_simulate
from trioproxy.simulator.stats import RequestTrace, SimStats

__all__ = [
    "MODELS",
    "Fault",
    "FaultError",
    "RequestTrace",
    "SimStats",
    "Simulator",
    "main_simulate",
]
