#!/usr/bin/env python3
"""Prints N free loopback TCP ports whose +10000 neighbour is free too
(SeaweedFS puts each gRPC port at its HTTP port + 10000)."""
import socket
import sys


def free_port(taken):
    while True:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port >= 55000 or port in taken or port + 10000 in taken:
            continue
        try:
            t = socket.socket()
            t.bind(("127.0.0.1", port + 10000))
            t.close()
        except OSError:
            continue
        return port


taken = set()
for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 1):
    p = free_port(taken)
    taken.update({p, p + 10000})
    print(p)
