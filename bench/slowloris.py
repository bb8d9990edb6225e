#!/usr/bin/env python3
# Usage: bench/slowloris.py HOST PORT N  (against a running `modelhub serve`)
# Opens N connections that send half a request header, then reports when
# the server closed them (seconds after the last one opened).
import resource, selectors, socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_NOFILE, (n + 500, n + 500))
sel = selectors.DefaultSelector()
conns = []
for _ in range(n):
    s = socket.create_connection((host, port))
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ)
    conns.append(s)
t0 = time.time()
closed = []
while len(closed) < n and time.time() - t0 < 30:
    for key, _ in sel.select(timeout=1):
        try:
            data = key.fileobj.recv(4096)
        except OSError:
            data = b""
        if not data:
            sel.unregister(key.fileobj); key.fileobj.close(); closed.append(time.time() - t0)
print(f"{n} connections; closed {len(closed)}; still open after {time.time()-t0:.1f}s: {n-len(closed)}")
if closed:
    print(f"first closed at {min(closed):.2f}s, last at {max(closed):.2f}s")
