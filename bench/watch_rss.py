#!/usr/bin/env python3
"""RSS of a modelhub server holding N snapshot watchers that never read.

Usage: bench/watch_rss.py BINARY [--cells 5000] [--watchers 200] [--label-bytes 0]
                           [--path /api/v1beta1/cells?watch=true] [--extra 'serve flags']

Starts BINARY serve on a fresh database, creates one realm/space/stack and
--cells cells (in applies of 1,000), optionally a realm with one label of
--label-bytes, then opens --watchers connections that each send
`GET --path` (default: a snapshot watch of every cell) with a small receive
buffer and never read. Prints VmRSS (from /proc/PID/status) before the
watchers, and 5 s after the last one was opened.
"""
import argparse, json, os, socket, subprocess, sys, tempfile, time, urllib.request

def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

def threads(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])

def post(base, path, body, ctype):
    req = urllib.request.Request(base + path, data=body.encode(), method="POST",
                                 headers={"Content-Type": ctype})
    with urllib.request.urlopen(req, timeout=120) as r:
        return r.status

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--cells", type=int, default=5000)
    ap.add_argument("--watchers", type=int, default=200)
    ap.add_argument("--label-bytes", type=int, default=0)
    ap.add_argument("--extra", default="")
    ap.add_argument("--path", default="/api/v1beta1/cells?watch=true")
    a = ap.parse_args()
    d = tempfile.mkdtemp()
    env = dict(os.environ, MODELHUB_SPARE_SPACE="0", RUST_LOG="warn")
    p = subprocess.Popen([a.binary, "serve", "--listen", "127.0.0.1:0", "--data", d + "/hub.redb"]
                         + a.extra.split(), stdout=subprocess.PIPE, env=env)
    try:
        base = p.stdout.readline().decode().strip().split("listening on ")[1]
        host, port = base[len("http://"):].split(":")
        head = ("apiVersion: v1beta1\nkind: Realm\nmetadata:\n  name: r\n---\n"
                "apiVersion: v1beta1\nkind: Space\nmetadata:\n  name: s\nspec:\n  realmId: r\n---\n"
                "apiVersion: v1beta1\nkind: Stack\nmetadata:\n  name: t\nspec:\n  realmId: r\n  spaceId: s\n")
        post(base, "/api/v1beta1/apply", head, "application/yaml")
        cell = ("apiVersion: v1beta1\nkind: Cell\nmetadata:\n  name: c{i}\n  labels:\n    app: web\n"
                "spec:\n  realmId: r\n  spaceId: s\n  stackId: t\n  containers:\n"
                "  - id: main\n    image: registry.example.com/app:{i}\n    command: /bin/server\n"
                "    args: [--port, '8080', --verbose]\n    env: [A=1, B=2, C=3]\n")
        for start in range(0, a.cells, 1000):
            docs = "---\n".join(cell.format(i=i) for i in range(start, min(a.cells, start + 1000)))
            post(base, "/api/v1beta1/apply", docs, "application/yaml")
        if a.label_bytes:
            big = {"apiVersion": "v1beta1", "kind": "Realm",
                   "metadata": {"name": "big", "labels": {"x": "y" * a.label_bytes}}}
            try:
                post(base, "/api/v1beta1/realms", json.dumps(big), "application/json")
            except Exception as e:
                print("big label refused:", e)
        with urllib.request.urlopen(base + "/api/v1beta1/cells") as r:
            size = len(r.read())
        time.sleep(1)
        before = rss_kib(p.pid)
        socks, refused = [], 0
        for i in range(a.watchers):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect((host, int(port)))
            s.sendall(f"GET {a.path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            socks.append(s)
        series = []
        for _ in range(8):
            time.sleep(1)
            series.append((rss_kib(p.pid) // 1024, threads(p.pid)))
        after = rss_kib(p.pid)
        print("(rss MiB, threads) each second after the watchers:", series)
        print(f"cells={a.cells} list_bytes={size} watchers={a.watchers} "
              f"rss_before={before/1024:.1f}MiB rss_after={after/1024:.1f}MiB "
              f"per_watcher={(after-before)/max(1,a.watchers):.0f}KiB")
        # How many got 200 vs 429 (peek at the status line).
        ok = tooMany = 0
        for s in socks:
            s.settimeout(0.5)
            try:
                line = s.recv(64)
            except Exception:
                line = b""
            if b" 200 " in line: ok += 1
            elif b" 429 " in line: tooMany += 1
        print(f"status: 200={ok} 429={tooMany} other={len(socks)-ok-tooMany}")
        for s in socks:
            s.close()
    finally:
        p.terminate()
        p.wait()

if __name__ == "__main__":
    main()
