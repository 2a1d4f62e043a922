#!/usr/bin/env python3
"""Opens N idle MQTT 3.1.1 connections to HOST:PORT: each sends CONNECT (clean session,
keep-alive 600 s) and one SUBSCRIBE (QoS 1, a topic of its own), waits for CONNACK and
SUBACK, then stays silent. Prints "ready N" once every connection is set up, and holds them
until stdin closes or it is killed. Used by tests/bench/idle.sh; a process holds at most
what its descriptor limit allows, so the script spreads larger counts over several."""
import os
import socket
import struct
import sys


def remaining_length(n):
    out = b""
    while True:
        byte, n = n % 128, n // 128
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


def utf8(s):
    return struct.pack(">H", len(s)) + s


def main():
    host, port, count, prefix = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    conns = []
    for i in range(count):
        c = socket.create_connection((host, port), timeout=30)
        cid = f"{prefix}-{i}".encode()
        head = utf8(b"MQTT") + bytes([4, 2]) + struct.pack(">H", 600)
        c.sendall(bytes([0x10]) + remaining_length(len(head) + 2 + len(cid)) + head + utf8(cid))
        sub = struct.pack(">H", 1) + utf8(f"idle/{prefix}/{i}".encode()) + bytes([1])
        c.sendall(bytes([0x82]) + remaining_length(len(sub)) + sub)
        conns.append(c)
    for c in conns:
        got = b""
        while len(got) < 4 + 5:  # CONNACK, then SUBACK with one reason code
            chunk = c.recv(64)
            if not chunk:
                sys.exit(f"{prefix}: the broker closed a connection during set-up")
            got += chunk
        if got[3] != 0:
            sys.exit(f"{prefix}: CONNACK refused with {got[3]}")
    print(f"ready {count}", flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
