"""The python-mp-pool peer of `shmkit-bench --workload pool` (compare/src/pool.rs).

usage: mp_pool.py WORKLOAD TASKS WORKERS REPS
  WORKLOAD  trivial (x -> x * x) or busy1ms (spin 1 ms on perf_counter, return x)

Starts multiprocessing.Pool(WORKERS) (the platform's default start method), warms it up
with one small map, then times REPS calls of pool.map(f, range(TASKS)) with Python's
default chunksize (len / (4 * workers), rounded up). Prints one JSON line:
{"python": VERSION, "start_method": ..., "chunksize": ..., "seconds": [wall time of each map]}
"""

import json
import multiprocessing as mp
import sys
import time


def trivial(x):
    return x * x


def busy1ms(x):
    end = time.perf_counter() + 0.001
    while time.perf_counter() < end:
        pass
    return x


def main():
    workload, tasks, workers, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    f = {"trivial": trivial, "busy1ms": busy1ms}[workload]
    chunksize, extra = divmod(tasks, workers * 4)
    if extra:
        chunksize += 1
    seconds = []
    with mp.Pool(workers) as pool:
        pool.map(f, range(min(tasks, 100)))
        for _ in range(reps):
            t = time.perf_counter()
            out = pool.map(f, range(tasks))
            seconds.append(time.perf_counter() - t)
            assert len(out) == tasks
    print(json.dumps({
        "python": sys.version.split()[0],
        "start_method": mp.get_start_method(),
        "chunksize": chunksize,
        "seconds": seconds,
    }))


if __name__ == "__main__":
    main()
