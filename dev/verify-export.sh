#!/usr/bin/env bash
# Verifies an audit export offline, with the public key and nothing of
# Entitle's: jq, openssl and sha256sum.
#
#   dev/verify-export.sh EXPORT.jsonl PUBLIC_KEY.pem
#
# The last line is the checkpoint; its signature (ECDSA P-256 over SHA-256,
# DER, base64) covers the message rebuilt below. Each record line's SHA-256
# is the next record's prev_hash, and the last one's is the checkpoint's
# head_hash: a record edited, dropped or reordered, or the chain rewritten
# with new hashes, does not verify. The checkpoint's `earlier` ones (signed
# by the sweep when their records were new, stored beside the chain) are
# checked the same way, each against the record at its position: a table
# rewritten later, hashes and all, does not verify either.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 EXPORT.jsonl PUBLIC_KEY.pem" >&2; exit 2; }
for tool in jq openssl sha256sum; do
  command -v "$tool" > /dev/null || { echo "verify-export: $tool is required" >&2; exit 2; }
done
export_file=$1
key=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

signed() { # checkpoint JSON file: its signature verifies with the key
  jq -j '"entitle-audit-checkpoint/v1\n\(.tenant_id)\n\(.seq)\n\(.head_hash)\n\(.at)\n\(.key_id)"' "$1" > "$work/message"
  jq -j .signature "$1" | openssl base64 -d -A > "$work/signature.der"
  openssl dgst -sha256 -verify "$key" -signature "$work/signature.der" "$work/message" > /dev/null
}

tail -n 1 "$export_file" > "$work/checkpoint.json"
if ! signed "$work/checkpoint.json"; then
  echo "verify-export: the checkpoint's signature does not verify with $key" >&2
  exit 1
fi

declare -A hashes
seq= hash=
while IFS= read -r line; do
  this_seq=$(jq -r .seq <<< "$line")
  this_prev=$(jq -r .prev_hash <<< "$line")
  if [ -n "$hash" ]; then
    [ "$this_seq" = $((seq + 1)) ] || { echo "verify-export: record $this_seq follows record $seq" >&2; exit 1; }
    [ "$this_prev" = "$hash" ] || { echo "verify-export: record $this_seq does not link to the hash of record $seq" >&2; exit 1; }
  fi
  seq=$this_seq
  hash=$(printf '%s' "$line" | sha256sum | cut -d' ' -f1)
  hashes[$seq]=$hash
done < <(head -n -1 "$export_file")

want_seq=$(jq -r .seq "$work/checkpoint.json")
want_hash=$(jq -r .head_hash "$work/checkpoint.json")
if [ "$seq" != "$want_seq" ] || [ "$hash" != "$want_hash" ]; then
  echo "verify-export: the records end at ${seq:-nothing} with hash ${hash:-none}; the signed checkpoint says $want_seq with $want_hash" >&2
  exit 1
fi
tenant=$(jq -r .tenant_id "$work/checkpoint.json")
earlier=$(jq '.earlier // [] | length' "$work/checkpoint.json")
for ((i = 0; i < earlier; i++)); do
  jq ".earlier[$i]" "$work/checkpoint.json" > "$work/earlier.json"
  at=$(jq -r .at "$work/earlier.json")
  if ! signed "$work/earlier.json"; then
    echo "verify-export: the stored checkpoint signed at $at does not verify with $key" >&2
    exit 1
  fi
  [ "$(jq -r .tenant_id "$work/earlier.json")" = "$tenant" ] || { echo "verify-export: the stored checkpoint signed at $at names another tenant" >&2; exit 1; }
  cp_seq=$(jq -r .seq "$work/earlier.json")
  cp_hash=$(jq -r .head_hash "$work/earlier.json")
  if [ -n "${hashes[$cp_seq]:-}" ] && [ "${hashes[$cp_seq]}" != "$cp_hash" ]; then
    echo "verify-export: record $cp_seq hashes to ${hashes[$cp_seq]}; the checkpoint signed at $at says $cp_hash: the chain was rewritten after it was signed" >&2
    exit 1
  fi
done
echo "verified: $(jq -r '"tenant \(.tenant_id), records up to \(.seq), head \(.head_hash), signed at \(.at) by \(.key_id)"' "$work/checkpoint.json"); $earlier stored checkpoint(s) agree"
