"""A standalone SecantusDB server (MongoDB wire protocol) in its own process.

Prints its URI on the first line of stdout, then serves until SIGTERM. Standalone
(``replica_set_name=None``): the replica-set oplog slows SecantusDB down after ~10,000 writes.
"""

from __future__ import annotations

import signal
import sys
import threading

from secantus import SecantusDBServer


def main() -> None:
    server = SecantusDBServer(
        host="127.0.0.1", port=0, storage_path=sys.argv[1], replica_set_name=None
    )
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(server.uri, flush=True)
    stop.wait()
    server.stop()


if __name__ == "__main__":
    main()
