#!/usr/bin/env python3
"""An independent verifier of a Penghubung audit log, written from docs/audit-format.md alone
(Python standard library; signatures are checked when the `cryptography` package is present).

    python3 verify.py SEGMENT... [--pubkey FILE]
        [--prove EXCHANGE_ID --nonce NONCE [--request FILE] [--response FILE]]

With --prove, also checks that the files are the bodies the exchange's record commits to:
HMAC-SHA256 keyed with the exchange's nonce (SPL-Commitment-Nonce, base64url), or, for a
record of format 1, the SHA-256.
"""
import base64
import hashlib
import hmac
import json
import sys


def h(data):
    return hashlib.sha256(data).digest()


def mth_compact(subtrees):
    if not subtrees:
        return h(b"")
    acc = subtrees[-1][1]
    for _, left in reversed(subtrees[:-1]):
        acc = h(b"\x01" + left + acc)
    return acc


def take(args, flag):
    """The value after `flag` (removed from args), or None."""
    if flag not in args:
        return None
    i = args.index(flag)
    value = args[i + 1]
    del args[i:i + 2]
    return value


def prove(record, nonce, part, path):
    body = open(path, "rb").read()
    recorded = record.get(part)
    if recorded is None:
        return f"{part}: the record holds no {part} body"
    if "commitment" in recorded:
        key = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        same = hmac.compare_digest(hmac.new(key, body, hashlib.sha256).hexdigest(), recorded["commitment"])
    else:
        same = hashlib.sha256(body).hexdigest() == recorded["sha256"]
    if same and recorded["length"] == len(body):
        return None
    return f"{part}: {path} is not the body the record commits to"


def main(args):
    args = list(args)
    proving = take(args, "--prove")
    nonce = take(args, "--nonce")
    bodies = [(part, take(args, f"--{part}")) for part in ("request", "response")]
    pubkey = None
    if "--pubkey" in args:
        i = args.index("--pubkey")
        text = open(args[i + 1]).read().strip()
        if text.startswith("-----BEGIN PUBLIC KEY-----"):
            import base64
            der = base64.b64decode("".join(text.splitlines()[1:-1]))
            pubkey = der[-32:]  # SubjectPublicKeyInfo of an Ed25519 key: the key is its last 32 bytes
        else:
            pubkey = bytes.fromhex(text.split(":", 1)[-1])
        args = args[:i] + args[i + 2:]
    verify_sig = None
    if pubkey is not None:
        try:
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
            key = Ed25519PublicKey.from_public_bytes(pubkey)

            def verify_sig(message, signature_hex):
                key.verify(bytes.fromhex(signature_hex), message)
        except ImportError:
            print("note: `cryptography` is not installed; signatures not checked")
    prev, seq, subtrees, size = "0" * 64, 0, [], 0
    for path in args:
        data = open(path, "rb").read()
        # The segment being written is pre-allocated: its records end at the first zero byte
        # at a line start, and every byte after that one is zero.
        end = 0
        while end < len(data) and data[end] != 0:
            newline = data.find(b"\n", end)
            end = len(data) if newline < 0 else newline + 1
        if data[end:].strip(b"\0"):
            sys.exit(f"{path}: bytes after the zero-filled end of the records")
        data = data[:end]
        if data and not data.endswith(b"\n"):
            sys.exit(f"{path}: torn last line")
        for n, line in enumerate(data.split(b"\n")[:-1], 1):
            record = json.loads(line)
            where = f"{path}, line {n}"
            if record["seq"] != seq:
                sys.exit(f"{where}: sequence {record['seq']} where {seq} was due")
            if record["prev"] != prev:
                sys.exit(f"{where}: chain broken")
            if record["kind"] not in ("exchange", "admin", "tree-head"):
                sys.exit(f"{where}: unknown record kind {record['kind']!r}")
            if record["kind"] == "tree-head":
                if record["tree_size"] != size or record["root"] != mth_compact(subtrees).hex():
                    sys.exit(f"{where}: tree head does not match the records before it")
                if verify_sig:
                    message = "penghubung-tree-head-v1\n{}\n{}\n{}\n{}\n".format(
                        record["gateway"], record["tree_size"], record["root"], record["time"]).encode()
                    verify_sig(message, record["signature"])
            if proving and record.get("exchange_id") == proving:
                for part, path in bodies:
                    if path:
                        problem = prove(record, nonce or "", part, path)
                        if problem:
                            sys.exit(f"{where}: {problem}")
                        print(f"{part}: {path} is the body exchange {proving} committed to")
                proving = proving + " (proven)"
            prev, seq = hashlib.sha256(line).hexdigest(), seq + 1
            subtrees.append((1, h(b"\x00" + line)))
            size += 1
            while len(subtrees) > 1 and subtrees[-1][0] == subtrees[-2][0]:
                (s, right), (_, left) = subtrees.pop(), subtrees.pop()
                subtrees.append((2 * s, h(b"\x01" + left + right)))
    if proving and not proving.endswith(" (proven)"):
        sys.exit(f"no record of exchange {proving}")
    print(f"{seq} records verify")


if __name__ == "__main__":
    main(sys.argv[1:])
