"""localstripe (the pinned PyPI package) for the local stack: its own
application, served on 127.0.0.1 only and kept in memory.

localstripe's own entry point listens on every interface (it binds `::`)
and saves its state to /tmp/localstripe.pickle after every write, where two
stacks on one machine would share (and load) each other's data. This runs
the same aiohttp application with the address and port given, and without
the file: a stack's Stripe starts empty and ends with the stack.

usage: localstripe_server.py --port PORT [--host 127.0.0.1]
"""

import argparse
import logging
import sys

from aiohttp import web
from localstripe import resources, server


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()

    # In memory only: no /tmp/localstripe.pickle shared between stacks.
    resources.Store.dump_to_disk = lambda self: None
    resources.Store.try_load_from_disk = lambda self: None

    access = logging.getLogger("aiohttp.access")
    access.setLevel(logging.INFO)
    access.addHandler(logging.StreamHandler(sys.stdout))
    web.run_app(server.app, host=args.host, port=args.port, access_log=access, print=None)


if __name__ == "__main__":
    main()
