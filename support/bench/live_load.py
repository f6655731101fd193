#!/usr/bin/env python3
"""Many live streams at once on `audio-mnist serve` over loopback (`/api/live`).

    support/bench/live_load.py AUDIO_MNIST_BIN MODEL WAV [STREAMS=50] [SECONDS=60]

WAV (16-bit mono) is looped to SECONDS of audio. First one stream sends it all at once: the
reference sequence. Then STREAMS streams send it at the pace of a microphone (100 ms chunks,
each sent when due and after the previous answer); each stream's sequence must equal the
reference (no dropped or changed digit). Prints the per-chunk answer time (p50, p99, max),
how far behind real time the slowest stream fell, and the server's peak memory. Standard
library only; the server is started on a free port and stopped at the end.
"""
import array, http.client, json, subprocess, sys, threading, time, wave

binary, model, path = sys.argv[1:4]
streams = int(sys.argv[4]) if len(sys.argv) > 4 else 50
seconds = float(sys.argv[5]) if len(sys.argv) > 5 else 60.0
w = wave.open(path)
assert w.getsampwidth() == 2 and w.getnchannels() == 1, "16-bit mono WAV"
rate = w.getframerate()
pcm = array.array("h", w.readframes(w.getnframes()))
total = int(seconds * rate)
looped = array.array("h", (pcm * (total // len(pcm) + 1))[:total])
floats = array.array("f", (v / 32768.0 for v in looped)).tobytes()
chunk = 4 * rate // 10

server = subprocess.Popen([binary, "serve", "--model", model, "--addr", "127.0.0.1:0"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
host, port = server.stdout.readline().strip().rsplit("/", 1)[1].split(":")


def call(conn, method, url, body=None):
    conn.request(method, url, body, {"Content-Type": "application/octet-stream"})
    r = conn.getresponse()
    data = json.loads(r.read())
    if r.status not in (200, 201):
        raise SystemExit(f"{method} {url}: HTTP {r.status} {data}")
    return data


def stream(paced, out):
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    sid = call(conn, "POST", f"/api/live?rate={rate}&format=f32le")["stream"]
    times, behind, start = [], 0.0, time.perf_counter()
    for k, i in enumerate(range(0, len(floats), chunk)):
        if paced:
            due = start + (k + 1) * 0.1
            time.sleep(max(0.0, due - time.perf_counter()))
            behind = max(behind, time.perf_counter() - due)
        t = time.perf_counter()
        call(conn, "POST", f"/api/live/{sid}", floats[i:i + chunk])
        times.append(time.perf_counter() - t)
    out.append((call(conn, "DELETE", f"/api/live/{sid}")["sequence"], times, behind))


try:
    ref = []
    stream(False, ref)
    reference = ref[0][0]
    print(f"{seconds:.0f} s of {path} looped; reference sequence: {len(reference)} digits")
    results = []
    threads = [threading.Thread(target=stream, args=(True, results)) for _ in range(streams)]
    for t in threads:
        t.start()
        time.sleep(0.1 / streams)  # spread the streams' chunk times
    for t in threads:
        t.join()
    same = sum(seq == reference for seq, _, _ in results)
    times = sorted(x for _, ts, _ in results for x in ts)
    pick = lambda q: 1000 * times[min(len(times) - 1, int(q * len(times)))]
    print(f"{streams} streams: {same} of {len(results)} gave the reference sequence exactly")
    print(f"answer per 100 ms chunk: p50 {pick(0.5):.1f} ms, p99 {pick(0.99):.1f} ms, max {1000 * times[-1]:.1f} ms")
    print(f"most behind real time: {max(b for _, _, b in results) * 1000:.0f} ms")
    for line in open(f"/proc/{server.pid}/status"):
        if line.startswith("VmHWM"):
            print("server peak memory (VmHWM):", line.split(":")[1].strip())
finally:
    server.terminate()
    server.wait()
