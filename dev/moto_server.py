"""moto's server, with DynamoDB requests made atomic.

DynamoDB applies each request (a conditional put, a transaction) atomically:
no other request sees or interleaves with half of it. moto's threaded server
checks conditions and writes without a lock, so two concurrent transactions
can both pass a condition that only one of them may pass. This launcher runs
the same moto application and serialises DynamoDB requests (only those: SQS
long polls must not hold up everything else), which restores the isolation
the real service guarantees. It also keeps moto from re-copying a table for
every item of a transaction (see _TableBackups). Nothing else about moto
changes.

usage: moto_server.py HOST PORT
"""

import copy
import sys
import threading

import moto.dynamodb.models as _ddb

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple

_dynamodb = threading.Lock()


class _TableBackups:
    """The `copy` module as moto's DynamoDB backend sees it.

    For rollback, moto deep-copies a table before a transaction, but once per
    *item* of the transaction, so a 99-item transaction copies the table 99
    times. Within one transaction the copies are identical (they are all taken
    before any item is applied), so one is kept per table. Only Table objects
    (long-lived) are cached, and only during a transaction.
    """

    def __init__(self):
        self.cache = None

    def deepcopy(self, obj, memo=None):
        if self.cache is not None and isinstance(obj, _ddb.Table):
            if id(obj) not in self.cache:
                self.cache[id(obj)] = copy.deepcopy(obj)
            return self.cache[id(obj)]
        return copy.deepcopy(obj, memo)

    def __getattr__(self, name):
        return getattr(copy, name)


_backups = _TableBackups()
_ddb.copy = _backups
_transact_write_items = _ddb.DynamoDBBackend.transact_write_items


def _transact_once(self, transact_items):
    _backups.cache = {}
    try:
        return _transact_write_items(self, transact_items)
    finally:
        _backups.cache = None


_ddb.DynamoDBBackend.transact_write_items = _transact_once


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
