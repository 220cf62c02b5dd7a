"""Checks the functions' logs from a test run.

Every line a function wrote is JSON; every line about a tenant carries the
Lambda request id; no line contains a secret.

usage: check_logs.py LOG SECRET...
"""

import json
import sys


def main(path, secrets):
    problems = []
    json_lines = tenant_lines = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            for secret in secrets:
                if secret in line:
                    problems.append(f"line {n}: contains a secret")
            if not line.startswith("{"):
                continue  # cargo lambda watch's own lines and cargo's build output
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                problems.append(f"line {n}: not JSON: {e}")
                continue
            json_lines += 1
            fields = record.get("fields", {})
            if "tenant" in fields:
                tenant_lines += 1
                spans = record.get("spans", []) + [record.get("span", {})]
                if not any(s.get("requestId") for s in spans):
                    problems.append(f"line {n}: about tenant {fields['tenant']} without a Lambda request id")
                if not ("cause" in fields or "message_id" in json.dumps(spans)):
                    problems.append(f"line {n}: about tenant {fields['tenant']} without a cause")
    if json_lines == 0 or tenant_lines == 0:
        problems.append(f"expected function log lines in {path}, found {json_lines} JSON line(s), {tenant_lines} about tenants")
    for p in problems[:20]:
        print(f"log check: {p}")
    if problems:
        sys.exit(f"log check failed: {len(problems)} problem(s) in {path}")
    print(f"log check: {json_lines} JSON lines, {tenant_lines} about tenants, all with a request id; no secret in any line")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
