"""What one request to moto's SQS costs as a FIFO queue fills.

moto (the local stand-in for SQS) recomputes a queue's attributes, with
its approximate message counts, by walking every message, several times
per SendMessage and once per message received: each request costs more
as the queue's backlog grows. Real SQS does not. When a sync outruns
provision's local poller (entitle-dev esm), the reconcile queue fills
and every request to it, ingest's sends included, slows down with it.

usage: .venv/bin/python dev/moto_queue_cost.py   (moto in process; no server)
"""

import time

from moto.sqs.models import sqs_backends

backend = sqs_backends["123456789012"]["us-east-1"]
queue = backend.create_queue("cost.fifo", FifoQueue="true", VisibilityTimeout="30")
sent = 0


def send(body):
    global sent
    sent += 1
    backend.send_message("cost.fifo", body, group_id="tenant", deduplication_id=f"m{sent}")


print("| messages in the queue | SendMessage | ReceiveMessage (10) | DeleteMessage |")
print("| --- | --- | --- | --- |")
for backlog in (0, 250, 500, 1000, 2000):
    while len(queue._messages) < backlog:
        send("backlog")
    at = time.perf_counter()
    for _ in range(10):
        send("timed")
    send_ms = (time.perf_counter() - at) * 100
    at = time.perf_counter()
    got = backend.receive_message("cost.fifo", 10, 0, 30)
    receive_ms = (time.perf_counter() - at) * 1000
    at = time.perf_counter()
    for m in got:
        backend.delete_message("cost.fifo", m.receipt_handle)
    delete_ms = (time.perf_counter() - at) * 1000 / max(1, len(got))
    print(f"| {len(queue._messages)} | {send_ms:.1f} ms | {receive_ms:.1f} ms | {delete_ms:.2f} ms |")
