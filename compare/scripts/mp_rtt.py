"""The python-mp-pipe, python-mp-queue and python-mp-simplequeue peers of `shmkit bench` (compare/src/python_mp.rs).

usage: mp_rtt.py MECH WORKLOAD SIZE PARENT_CPU CHILD_CPU ARGS...
  MECH      pipe (multiprocessing.Pipe, send_bytes / recv_bytes, no pickling),
            queue (two multiprocessing.Queue, put / get), or
            simplequeue (two multiprocessing.SimpleQueue, put / get)
  WORKLOAD  rtt WARMUP ITERS     round trips, each timed on its own
            stream TARGET_MS REPS  one-way messages, the child checks each and answers once
  PARENT_CPU, CHILD_CPU  cores to pin to (os.sched_setaffinity); -1 pins nothing

The same rules as the Rust adapters: the sender builds every message (8-byte sequence
number, 8-byte extra word, then a fixed pattern), the receiver checks its length, its
sequence number and every byte of the pattern; a mismatch exits non-zero. The peer is a
multiprocessing.Process (the platform's default start method), pinned to CHILD_CPU.
Prints one JSON line: {"python", "start_method", "ns": [...]} where ns are the round
trips (rtt) or the time per message of each run (stream).
"""

import json
import multiprocessing as mp
import os
import sys
import time


def pattern(size):
    return bytes(((i * 31 + 7) & 0xFF) for i in range(16, size))


def stamp(seq, extra, rest):
    return seq.to_bytes(8, "little") + extra.to_bytes(8, "little") + rest


def check(msg, seq, rest):
    if len(msg) != 16 + len(rest) or int.from_bytes(msg[:8], "little") != seq or msg[16:] != rest:
        raise SystemExit(f"message {seq}: payload mismatch")


def pin(cpu):
    if cpu >= 0:
        os.sched_setaffinity(0, {cpu})


class Ends:
    """send(msg) / recv() of one side, over the mechanism's two directions."""

    def __init__(self, mech):
        if mech == "pipe":
            a, b = mp.Pipe(duplex=True)
            self.parent = (a.send_bytes, a.recv_bytes)
            self.child = (b.send_bytes, b.recv_bytes)
        elif mech in ("queue", "simplequeue"):
            make = mp.Queue if mech == "queue" else mp.SimpleQueue
            down, up = make(), make()
            self.parent = (down.put, up.get)
            self.child = (up.put, down.get)
        else:
            raise SystemExit(f"unknown mechanism {mech}")


def echo(ends, size, cpu, total):
    pin(cpu)
    send, recv = ends.child
    rest = pattern(size)
    for seq in range(total):
        check(recv(), seq, rest)
        send(stamp(seq, 0, rest))


def drain(ends, size, cpu, runs):
    pin(cpu)
    send, recv = ends.child
    rest = pattern(size)
    send(b"ready")
    for n in runs:
        for seq in range(n):
            check(recv(), seq, rest)
        send(b"done")


def rtt(ends, size, child_cpu, warmup, iters):
    total = warmup + iters
    p = mp.Process(target=echo, args=(ends, size, child_cpu, total), daemon=True)
    p.start()
    send, recv = ends.parent
    rest = pattern(size)
    ns = []
    clock = time.perf_counter_ns
    for seq in range(total):
        t0 = clock()
        send(stamp(seq, 0, rest))
        check(recv(), seq, rest)
        if seq >= warmup:
            ns.append(clock() - t0)
    p.join(10)
    return ns, p


def stream(ends, size, child_cpu, target_ms, reps):
    # A 64-message probe sizes the runs for TARGET_MS each (at least 16 messages, at most
    # 64 MiB); the child is told the counts when it starts, so the probe has a child of
    # its own. Each child says "ready" before the clock starts.
    send, recv = ends.parent
    rest = pattern(size)

    def start(runs):
        p = mp.Process(target=drain, args=(ends, size, child_cpu, runs), daemon=True)
        p.start()
        if recv() != b"ready":
            raise SystemExit("stream: bad ready message")
        return p

    def one(n):
        t0 = time.perf_counter_ns()
        for seq in range(n):
            send(stamp(seq, 0, rest))
        if recv() != b"done":
            raise SystemExit("stream: bad completion message")
        return time.perf_counter_ns() - t0

    probe = 64
    p = start([probe])
    per = max(one(probe) / probe, 1.0)
    p.join(10)
    n = int(min(max(target_ms * 1e6 / per, 16), max((64 << 20) // size, 16)))
    p = start([n] * reps)
    ns = [one(n) / n for _ in range(reps)]
    p.join(10)
    return ns, p


def main():
    mech, workload, size, parent_cpu, child_cpu = sys.argv[1:6]
    size, parent_cpu, child_cpu = int(size), int(parent_cpu), int(child_cpu)
    a, b = int(sys.argv[6]), int(sys.argv[7])
    pin(parent_cpu)
    ends = Ends(mech)
    if workload == "rtt":
        ns, p = rtt(ends, size, child_cpu, a, b)
    elif workload == "stream":
        ns, p = stream(ends, size, child_cpu, a, b)
    else:
        raise SystemExit(f"unknown workload {workload}")
    if p.exitcode != 0:
        raise SystemExit(f"peer exited with {p.exitcode}")
    print(json.dumps({
        "python": sys.version.split()[0],
        "start_method": mp.get_start_method(),
        "ns": ns,
    }))


if __name__ == "__main__":
    main()
