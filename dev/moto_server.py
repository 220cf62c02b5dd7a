"""moto's server, with DynamoDB requests made atomic.

DynamoDB applies each request (a conditional put, a transaction) atomically:
no other request sees or interleaves with half of it. moto's threaded server
checks conditions and writes without a lock, so two concurrent transactions
can both pass a condition that only one of them may pass. This launcher runs
the same moto application and serialises DynamoDB requests (only those: SQS
long polls must not hold up everything else), which restores the isolation
the real service guarantees. Nothing else about moto changes.

usage: moto_server.py HOST PORT
"""

import sys
import threading

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple

_dynamodb = threading.Lock()


class AtomicDynamoDB:
    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if not target.startswith("DynamoDB_"):
            return self.app(environ, start_response)
        with _dynamodb:
            # Materialise the response inside the lock.
            return list(self.app(environ, start_response))


def main(host, port):
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(host, int(port), AtomicDynamoDB(app), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
