#!/usr/bin/env python3
"""Reference Temporal worker for activity_core.

Serves workflow type ``RunActivityWorkflow`` (the type activity_core starts)
and its single activity ``run_activity``. The workflow takes one JSON object
``{"activity_id", "activity_name", "trigger", "input", "event"}`` and returns a
small summary of it. Used by the demo and by integration tests.

    python test/worker.py [--address HOST:PORT] [--namespace NS] [--task-queue TQ]

Defaults come from AC_TEMPORAL_ADDRESS (127.0.0.1:7233), AC_TEMPORAL_NAMESPACE
(default) and AC_TASK_QUEUE (orchestrator-tq). Stops cleanly on SIGTERM/SIGINT.
"""

import argparse
import asyncio
import logging
import os
import signal
from datetime import timedelta
from typing import Any, Dict

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker

log = logging.getLogger("activity_core.worker")


@activity.defn(name="run_activity")
async def run_activity(params: Dict[str, Any]) -> Dict[str, Any]:
    data = params.get("input")
    summary = {
        "activity_id": params.get("activity_id"),
        "activity_name": params.get("activity_name"),
        "trigger": params.get("trigger"),
        "input_keys": sorted(data) if isinstance(data, dict) else [],
        "has_event": params.get("event") is not None,
    }
    info = activity.info()
    log.info(
        "run_activity workflow_id=%s activity_id=%s name=%s trigger=%s input_keys=%s",
        info.workflow_id,
        summary["activity_id"],
        summary["activity_name"],
        summary["trigger"],
        ",".join(summary["input_keys"]),
    )
    return summary


@workflow.defn(name="RunActivityWorkflow")
class RunActivityWorkflow:
    @workflow.run
    async def run(self, params: Dict[str, Any]) -> Dict[str, Any]:
        return await workflow.execute_activity(
            run_activity,
            params,
            start_to_close_timeout=timedelta(seconds=30),
        )


async def connect(address: str, namespace: str, wait_s: float) -> Client:
    """Connect, retrying while the server is still coming up."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        try:
            return await Client.connect(address, namespace=namespace)
        except Exception as exc:  # server not up yet
            if loop.time() >= deadline:
                raise
            log.warning("cannot connect to %s yet (%s); retrying", address, exc)
            await asyncio.sleep(1)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--address", default=os.environ.get("AC_TEMPORAL_ADDRESS", "127.0.0.1:7233")
    )
    parser.add_argument(
        "--namespace", default=os.environ.get("AC_TEMPORAL_NAMESPACE", "default")
    )
    parser.add_argument(
        "--task-queue", default=os.environ.get("AC_TASK_QUEUE", "orchestrator-tq")
    )
    parser.add_argument(
        "--connect-timeout", type=float, default=60.0, help="seconds to keep retrying"
    )
    args = parser.parse_args()

    client = await connect(args.address, args.namespace, args.connect_timeout)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async with Worker(
        client,
        task_queue=args.task_queue,
        workflows=[RunActivityWorkflow],
        activities=[run_activity],
    ):
        log.info(
            "worker started address=%s namespace=%s task_queue=%s",
            args.address,
            args.namespace,
            args.task_queue,
        )
        await stop.wait()
        log.info("worker stopping")


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(main())
