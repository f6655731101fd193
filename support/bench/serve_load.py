#!/usr/bin/env python3
"""Load on `audio-mnist serve` over loopback: requests per second and p50/p99 latency of
POST /api/predict with one WAV, for 1, 8 and 64 concurrent clients (each sends its next
request when the last is answered), and the server's peak memory (VmHWM).

    support/bench/serve_load.py AUDIO_MNIST_BIN MODEL WAV [SECONDS_PER_LEVEL]

Standard library only. Starts the server itself on a free port and stops it at the end.
"""
import http.client
import subprocess
import sys
import threading
import time

binary, model, wav = sys.argv[1:4]
seconds = float(sys.argv[4]) if len(sys.argv) > 4 else 10.0
body = open(wav, "rb").read()
server = subprocess.Popen([binary, "serve", "--model", model, "--addr", "127.0.0.1:0"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
host, port = server.stdout.readline().strip().rsplit("/", 1)[1].split(":")


def client(stop, out):
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    while not stop.is_set():
        t = time.perf_counter()
        conn.request("POST", "/api/predict", body, {"Content-Type": "audio/wav"})
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            raise SystemExit(f"HTTP {r.status}")
        out.append(time.perf_counter() - t)


try:
    print(f"{len(body)} bytes per request, {seconds:.0f} s per level")
    print("| clients | requests/s | p50 ms | p99 ms |")
    print("|---|---|---|---|")
    for n in (1, 8, 64):
        stop, lat = threading.Event(), []
        threads = [threading.Thread(target=client, args=(stop, lat)) for _ in range(n)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        time.sleep(seconds)
        stop.set()
        for t in threads:
            t.join()
        took = time.perf_counter() - start
        lat.sort()
        q = lambda p: 1000 * lat[min(len(lat) - 1, int(p * len(lat)))]
        print(f"| {n} | {len(lat) / took:.0f} | {q(0.5):.1f} | {q(0.99):.1f} |")
    status = open(f"/proc/{server.pid}/status").read()
    peak = [l for l in status.splitlines() if l.startswith("VmHWM")][0].split()[1]
    print(f"server peak memory (VmHWM): {int(peak) / 1024:.0f} MiB")
finally:
    server.terminate()
    server.wait()
