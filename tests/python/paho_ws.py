"""MQTT over WebSocket, and over TLS + WebSocket, with Eclipse Paho's Python client
(paho-mqtt 2, transport="websockets"), a client nobody here wrote.

Run by tests/tests/websocket.rs against a real `tandem`:

    python paho_ws.py HOST PORT PATH VERSION [CAFILE]

VERSION is 311 or 5; with CAFILE the connection is TLS (wss://) verified against it.
One client subscribes, a second publishes at QoS 0, 1 and 2 (one payload larger than
the 64 KiB a WebSocket frame header announces in 16 bits), the first must receive them
all, in order. Prints "ok" and exits 0, or fails with an AssertionError (exit 1).
Every wait is on a condition with a deadline.
"""

import ssl
import sys
import threading
import time

import paho.mqtt.client as mqtt

DEADLINE = 20.0


def wait_for(what, cond):
    end = time.monotonic() + DEADLINE
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.02)


class Client:
    def __init__(self, host, port, path, version, cafile, client_id):
        proto = mqtt.MQTTv5 if version == "5" else mqtt.MQTTv311
        self.c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            transport="websockets",
            protocol=proto,
        )
        self.c.ws_set_options(path=path)
        if cafile:
            self.c.tls_set(ca_certs=cafile, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.messages = []
        self.lock = threading.Lock()
        self.c.on_connect = lambda c, u, f, rc, p: rc == 0 and self.connected.set()
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.c.on_message = self.on_message
        self.c.connect(host, int(port), keepalive=30)
        self.c.loop_start()
        assert self.connected.wait(DEADLINE), f"{client_id} did not connect"

    def on_message(self, client, userdata, msg):
        with self.lock:
            self.messages.append((msg.topic, msg.qos, bytes(msg.payload)))

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def main():
    host, port, path, version = sys.argv[1:5]
    cafile = sys.argv[5] if len(sys.argv) > 5 else None
    tag = f"v{version}{'-tls' if cafile else ''}"
    sub = Client(host, port, path, version, cafile, f"ws-sub-{tag}")
    sub.c.subscribe("ws/#", qos=2)
    assert sub.subscribed.wait(DEADLINE), "no SUBACK"
    pub = Client(host, port, path, version, cafile, f"ws-pub-{tag}")
    sent = [
        ("ws/0", 0, b"qos zero"),
        ("ws/1", 1, bytes(range(256)) * 400),  # 100 KiB: a 64-bit frame length
        ("ws/2", 2, b"qos two"),
    ]
    for topic, qos, payload in sent:
        info = pub.c.publish(topic, payload, qos=qos)
        info.wait_for_publish(DEADLINE)
    wait_for("three messages", lambda: len(sub.messages) >= 3)
    with sub.lock:
        got = list(sub.messages)
    assert got == sent, f"received {[(t, q, len(p)) for t, q, p in got]}"
    pub.close()
    sub.close()
    print("ok")


if __name__ == "__main__":
    main()
