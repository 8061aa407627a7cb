"""A run kind for the operator page's tests (tests/test_web.py): in-process nodes import this
module, and the ``python -m pynode`` nodes those tests start load it with
``--import tests.web_kinds``, as a user loads their own kinds.

``'web_steps'``, args ``[Steps, StepMs]``: ``Steps`` steps of ``StepMs`` ms of simulated
work, a checkpoint (the number of steps done) and a progress report ``done``/``total`` after
each; the result is ``#{steps => Steps}``. A move resumes at the checkpoint.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pynode.jobs import RunContext, RunKind, job_kind


@job_kind("web_steps")
class WebSteps(RunKind):
    async def run(self, ctx: RunContext) -> Any:
        steps, step_ms = ctx.args
        done = int(ctx.state or 0)
        for i in range(done, steps):
            await asyncio.sleep(step_ms / 1000)  # the simulated work itself, not a wait for a condition
            await ctx.checkpoint(i + 1)
            ctx.progress(done=i + 1, total=steps)
        return {"steps": steps}
