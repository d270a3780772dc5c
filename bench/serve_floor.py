"""Serves bench/floor.py with 2 workers the way ``authsvc serve --workers 2`` serves authsvc:
uvicorn's supervisor, each worker on a socket of its own (authsvc.workers), so that the two
servers in a run get their connections spread over their workers alike.

Usage: python bench/serve_floor.py PORT (with BENCH_FLOOR_DSN and BENCH_FLOOR_KEY set).
"""

from __future__ import annotations

import sys
from pathlib import Path

import uvicorn

from authsvc.workers import run_workers

sys.path.insert(0, str(Path(__file__).resolve().parent))  # floor.py; spawned workers inherit it

if __name__ == "__main__":
    run_workers(
        uvicorn.Config(
            "floor:app",
            host="127.0.0.1",
            port=int(sys.argv[1]),
            workers=2,
            access_log=False,
            log_level="warning",
        )
    )
