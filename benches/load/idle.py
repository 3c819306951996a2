#!/usr/bin/env python3
"""Memory per idle keep-alive connection (issue #9), loopback only.

Opens COUNT mTLS connections to 127.0.0.1:PORT (TLS 1.3, client certificate), sends one
request on each and reads its whole answer, then leaves them all open and idle; the resident
memory of the proxy's process tree (PID and its children: nginx's workers) is read before the
first connection and once every connection is idle. Prints one JSON object:
{"connections", "rss_before_kib", "rss_after_kib", "kib_per_connection", "failed"}.

Bounded: at most COUNT connections, each step under a timeout; everything is closed on exit.
"""
import argparse
import asyncio
import json
import os
import ssl
import sys


def tree_rss_kib(pid):
    pids = {pid}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                pids.add(int(entry))
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


async def open_one(args, context, request):
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", args.port, ssl=context, server_hostname="localhost"),
        timeout=10,
    )
    writer.write(request)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    if length:
        await asyncio.wait_for(reader.readexactly(length), timeout=10)
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head.split(b"\r\n", 1)[0].decode())
    return writer


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--path", default="/bench/item")
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--batch", type=int, default=200)
    args = ap.parse_args()
    context = ssl.create_default_context(cafile=args.ca)
    context.load_cert_chain(args.cert, args.key)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    request = f"GET {args.path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()

    before = tree_rss_kib(args.pid)
    writers, failed = [], 0
    for start in range(0, args.count, args.batch):
        n = min(args.batch, args.count - start)
        done = await asyncio.gather(
            *(open_one(args, context, request) for _ in range(n)), return_exceptions=True
        )
        for d in done:
            if isinstance(d, BaseException):
                failed += 1
            else:
                writers.append(d)
    await asyncio.sleep(2)
    after = tree_rss_kib(args.pid)
    held = len(writers)
    print(json.dumps({
        "connections": held,
        "failed": failed,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_connection": round((after - before) / held, 2) if held else None,
    }))
    for w in writers:
        w.close()
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
