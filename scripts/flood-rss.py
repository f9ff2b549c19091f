#!/usr/bin/env python3
"""Connection flood against a trust-proxy sidecar's mTLS ingress, sampling the sidecar's RSS.

Variants:
  tcp   plain TCP connect, send nothing, stay idle
  tls   full TLS handshake with a client certificate, stay idle
  req   TLS, one HTTP/1.1 keep-alive GET, read the answer, stay idle

Each turn: sample idle; open N connections (bounded concurrency) while a sampler thread
reads /proc/PID/status every 20 ms; hold them HOLD s; close them all; sample 5, 15, 30 s
after the close. Prints one JSON line per turn (and a human summary to stderr).

Example, against a node of the local testnet (scripts/testnet.sh) or any sidecar you run:
  ulimit -n 8192
  s=testnet/node-2-sidecar/state        # another node's identity, trusted by node 1
  .venv/bin/python3 scripts/flood-rss.py --pid <node 1 sidecar's PID> \
     --addr 127.0.0.1:<its ingress port> --variant req \
     --cert $s/node-cert.pem --key $s/node-key.pem --ca $s/ca-cert.pem --turns 2
`--trim` asks glibc to give freed memory back (gdb calls malloc_trim(0) in the process)
after the last turn: if RSS falls, the memory was free but kept by the allocator.
Used for docs/BENCHMARKS.md, "Memory after a flood".
"""
import argparse
import asyncio
import json
import os
import ssl
import subprocess
import sys
import threading
import time


def status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon", "RssFile", "VmHWM", "Threads"):
                out[k] = int(v.split()[0])
    return out


def rollup(pid):
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
                out[parts[0][:-1]] = int(parts[1])
    return out


def heap_vs_anon(pid):
    """RSS (KiB) by kind of mapping: [heap] (glibc main arena / brk), glibc thread-arena
    heaps (anonymous, 64 MiB-aligned rw-p part of a 64 MiB reservation), other anonymous
    mappings (large malloc chunks mmap'd directly, thread stacks, jemalloc/mimalloc
    extents, wasmtime), and file-backed; plus how many arena heaps exist."""
    maps = []
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            first = line.split()
            if not first:
                continue
            if "-" in first[0] and not first[0].endswith(":"):
                lo, hi = (int(x, 16) for x in first[0].split("-"))
                path = first[5] if len(first) >= 6 else ""
                maps.append([lo, hi, first[1], path, 0])
            elif first[0] == "Rss:":
                maps[-1][4] = int(first[1])
    M64 = 64 * 1024 * 1024
    out = {"heap": 0, "arenas": 0, "n_arenas": 0, "other_anon": 0, "file_and_other": 0}
    for i, (lo, hi, perms, path, rss) in enumerate(maps):
        if path == "[heap]":
            out["heap"] += rss
        elif path == "":
            nxt = maps[i + 1] if i + 1 < len(maps) else None
            arena = (lo % M64 == 0 and perms.startswith("rw") and (
                hi - lo == M64 or (nxt and nxt[0] == hi and nxt[3] == "" and
                                   nxt[2].startswith("---") and nxt[1] == lo + M64)))
            if arena:
                out["arenas"] += rss
                out["n_arenas"] += 1
            else:
                out["other_anon"] += rss
        else:
            out["file_and_other"] += rss
    return out


class Sampler(threading.Thread):
    def __init__(self, pid, every=0.02):
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.max_rss = 0
        self.max_threads = 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                s = status(self.pid)
            except FileNotFoundError:
                return
            self.max_rss = max(self.max_rss, s["VmRSS"])
            self.max_threads = max(self.max_threads, s["Threads"])
            time.sleep(self.every)


def make_ctx(args):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if args.ca:
        ctx.load_verify_locations(args.ca)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if args.cert:
        ctx.load_cert_chain(args.cert, args.key)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


async def open_one(args, ctx, sem, conns, errors):
    host, port = args.addr.rsplit(":", 1)
    async with sem:
        try:
            if args.variant == "tcp":
                r, w = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 30)
            else:
                r, w = await asyncio.wait_for(
                    asyncio.open_connection(host, int(port), ssl=ctx,
                                            server_hostname=args.sni), 30)
            if args.variant == "req":
                w.write(f"GET {args.path} HTTP/1.1\r\nHost: localhost\r\n"
                        f"Connection: keep-alive\r\n\r\n".encode())
                await w.drain()
                head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 30)
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                if length:
                    await asyncio.wait_for(r.readexactly(length), 30)
                code = head.split(b" ", 2)[1]
                if code != b"200":
                    errors.append(f"status {code.decode()}")
            conns.append((r, w))
        except Exception as e:  # noqa: BLE001 - count every failure
            errors.append(type(e).__name__ + ": " + str(e)[:80])


async def flood(args, ctx):
    sem = asyncio.Semaphore(args.concurrency)
    conns, errors = [], []
    t0 = time.monotonic()
    await asyncio.gather(*(open_one(args, ctx, sem, conns, errors) for _ in range(args.n)))
    opened = time.monotonic() - t0
    await asyncio.sleep(args.hold)
    # Are they still open? (a server timeout would have closed them: EOF readable)
    alive = sum(1 for r, _ in conns if not r.at_eof())
    for _, w in conns:
        w.close()
    for _, w in conns:
        try:
            await asyncio.wait_for(w.wait_closed(), 5)
        except Exception:  # noqa: BLE001
            pass
    return len(conns), alive, errors, opened


def mib(kb):
    return round(kb / 1024, 1)


def trim(pid):
    out = subprocess.run(["gdb", "-p", str(pid), "-batch", "-ex",
                          "call (int)malloc_trim(0)"], capture_output=True, text=True)
    ret = [l for l in out.stdout.splitlines() if l.startswith("$1")]
    return ret[0] if ret else (out.stdout[-200:] + out.stderr[-200:])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--addr", required=True)
    p.add_argument("--variant", choices=["tcp", "tls", "req"], required=True)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=200)
    p.add_argument("--hold", type=float, default=5)
    p.add_argument("--turns", type=int, default=3)
    p.add_argument("--after", default="5,15,30", help="seconds after the close to sample")
    p.add_argument("--cert"), p.add_argument("--key"), p.add_argument("--ca")
    p.add_argument("--sni", default="localhost")
    p.add_argument("--path", default="/healthz")
    p.add_argument("--label", default="")
    p.add_argument("--trim", action="store_true",
                   help="after the last turn, call malloc_trim(0) in the sidecar with gdb")
    args = p.parse_args()
    ctx = make_ctx(args) if args.variant != "tcp" else None
    after = [float(x) for x in args.after.split(",")]
    for turn in range(1, args.turns + 1):
        idle = status(args.pid)
        roll_idle = heap_vs_anon(args.pid)
        sampler = Sampler(args.pid)
        sampler.start()
        opened, alive, errors, secs = asyncio.run(flood(args, ctx))
        closed_at = time.monotonic()
        during_max = sampler.max_rss
        sampler.stop.set()
        sampler.join()
        afters = {}
        for a in after:
            time.sleep(max(0, closed_at + a - time.monotonic()))
            afters[str(int(a))] = status(args.pid)["VmRSS"]
        end = status(args.pid)
        rec = {
            "label": args.label, "variant": args.variant, "turn": turn, "pid": args.pid,
            "opened": opened, "alive_at_close": alive, "errors": len(errors),
            "error_kinds": sorted(set(errors))[:5], "open_secs": round(secs, 2),
            "idle_kb": idle["VmRSS"], "max_kb": during_max,
            "after_kb": afters, "threads_idle": idle["Threads"], "rssanon_idle": idle["RssAnon"],
            "threads_max": sampler.max_threads,
            "maps_idle": roll_idle, "maps_after": heap_vs_anon(args.pid),
            "rssanon_after": end["RssAnon"], "rssfile_after": end["RssFile"],
        }
        if args.trim and turn == args.turns:
            rec["trim_gdb"] = trim(args.pid)
            time.sleep(1)
            st = status(args.pid)
            rec["after_trim_kb"] = st["VmRSS"]
            rec["rssanon_after_trim"] = st["RssAnon"]
            rec["maps_after_trim"] = heap_vs_anon(args.pid)
        print(json.dumps(rec), flush=True)
        print(f"[{args.label} {args.variant} turn {turn}] opened {opened}/{args.n} "
              f"(alive {alive}, errors {len(errors)}) in {secs:.1f}s; RSS MiB idle "
              f"{mib(idle['VmRSS'])} max {mib(during_max)} after "
              + " ".join(f"{k}s={mib(v)}" for k, v in afters.items())
              + (f" trim->{mib(rec['after_trim_kb'])}" if 'after_trim_kb' in rec else ""),
              file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
