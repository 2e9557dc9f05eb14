"""Serve the plugin's static forward (no kubectl) in its own process, so CPU and RSS are its own.

    python bench/plugin_runner.py UPSTREAM_PORT [--inspect] [--profile OUT]  → prints `PORT <n>`

On SIGTERM it closes the forward and prints `STATS <repr>` before exiting.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH_DIR)
sys.path.insert(0, os.path.dirname(BENCH_DIR))

from common import announce_port, raise_nofile  # noqa: E402

import kubectl_vibe_pf  # noqa: E402


async def serve(upstream: int, inspect: bool) -> None:
    forward = await kubectl_vibe_pf.open_static_forward(
        ("127.0.0.1", upstream), address="127.0.0.1", port=0, inspect=inspect
    )
    announce_port(forward.port)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await forward.close()
    sys.stdout.write("STATS %r\n" % (forward.stats,))
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("upstream", type=int)
    parser.add_argument("--inspect", action="store_true")
    parser.add_argument(
        "--relay-buffer",
        type=int,
        default=0,
        help="override RELAY_BUFFER_BYTES (design experiments)",
    )
    parser.add_argument(
        "--no-gc",
        action="store_true",
        help="gc.freeze() + gc.disable() (experiment: does the cyclic GC cost p99?)",
    )
    parser.add_argument(
        "--profile",
        help="write cProfile stats here on exit (py-spy cannot attach in some containers)",
    )
    args = parser.parse_args()
    raise_nofile()
    if args.no_gc:
        import gc

        gc.freeze()
        gc.disable()
    if args.relay_buffer:
        kubectl_vibe_pf.RELAY_BUFFER_BYTES = args.relay_buffer
    if not args.profile:
        asyncio.run(serve(args.upstream, args.inspect))
        return
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        asyncio.run(serve(args.upstream, args.inspect))
    finally:
        profiler.disable()
        profiler.dump_stats(args.profile)


if __name__ == "__main__":
    main()
