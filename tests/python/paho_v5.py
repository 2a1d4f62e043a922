"""MQTT 5 end to end with Eclipse Paho's Python client (paho-mqtt 2), a client nobody here wrote.

Run by tests/tests/paho_python.rs against a real `tandem` with the `tandem-policy` plugin:

    python paho_v5.py HOST PORT SCENARIO

Each scenario prints "ok SCENARIO" and exits 0, or fails with an AssertionError (exit 1).
Every wait is on a condition with a deadline; the only fixed waits are the message
expiry and will delay intervals themselves, which are what is tested.
"""

import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

DEADLINE = 20.0


class Client:
    """A paho client with its callbacks recorded and waited on."""

    def __init__(self, host, port, client_id, user="alice", password="right", manual_ack=False):
        self.host, self.port = host, port
        self.c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=manual_ack,
            reconnect_on_failure=False,
        )
        if user is not None:
            self.c.username_pw_set(user, password)
        self.cond = threading.Condition()
        self.connack = None
        self.subacks = {}
        self.pubacks = {}
        self.messages = []
        self.disconnected = None
        self.c.on_connect = self._on_connect
        self.c.on_subscribe = self._on_subscribe
        self.c.on_publish = self._on_publish
        self.c.on_message = self._on_message
        self.c.on_disconnect = self._on_disconnect

    def _record(self, f):
        with self.cond:
            f()
            self.cond.notify_all()

    def _on_connect(self, c, u, flags, reason_code, properties):
        self._record(lambda: setattr(self, "connack", (flags, reason_code, properties)))

    def _on_subscribe(self, c, u, mid, reason_codes, properties):
        self._record(lambda: self.subacks.__setitem__(mid, (reason_codes, properties)))

    def _on_publish(self, c, u, mid, reason_code, properties):
        self._record(lambda: self.pubacks.__setitem__(mid, (reason_code, properties)))

    def _on_message(self, c, u, message):
        self._record(lambda: self.messages.append(message))

    def _on_disconnect(self, c, u, flags, reason_code, properties):
        self._record(lambda: setattr(self, "disconnected", reason_code))

    def wait(self, what, pred, timeout=DEADLINE):
        with self.cond:
            ok = self.cond.wait_for(pred, timeout)
        assert ok, f"{self.c._client_id!r}: no {what} within {timeout}s"

    def connect(self, clean_start=True, properties=None, will=None):
        if will is not None:
            topic, payload, qos, props = will
            self.c.will_set(topic, payload, qos, properties=props)
        self.connack = None
        self.c.connect(self.host, self.port, keepalive=30, clean_start=clean_start, properties=properties)
        self.c.loop_start()
        self.wait("CONNACK", lambda: self.connack is not None)
        return self.connack

    def subscribe(self, topic, qos=1, properties=None):
        _, mid = self.c.subscribe(topic, qos, properties=properties)
        self.wait(f"SUBACK for {topic}", lambda: mid in self.subacks)
        return self.subacks[mid]

    def publish(self, topic, payload, qos=1, properties=None, retain=False):
        info = self.c.publish(topic, payload, qos, retain=retain, properties=properties)
        if qos > 0:
            self.wait(f"PUBACK for {topic}", lambda: info.mid in self.pubacks)
            return self.pubacks[info.mid]
        return None

    def payloads(self):
        with self.cond:
            return [m.payload.decode() for m in self.messages]

    def wait_payload(self, payload):
        self.wait(f"message {payload!r}", lambda: payload in [m.payload.decode() for m in self.messages])
        return next(m for m in self.messages if m.payload.decode() == payload)

    def disconnect(self, properties=None):
        self.c.disconnect(properties=properties)
        self.wait("disconnect", lambda: self.disconnected is not None)
        self.c.loop_stop()

    def drop(self):
        """Ends the connection without DISCONNECT (the will is published)."""
        self.c.loop_stop()
        self.c.socket().close()


def props(kind, **fields):
    p = Properties(kind)
    for k, v in fields.items():
        setattr(p, k, v)
    return p


def session_expiry(host, port):
    # A session that outlives its connection for 60 s keeps its subscription and queues
    # a QoS 1 message meanwhile; one with expiry 0 does not.
    a = Client(host, port, "paho-se")
    flags, rc, p = a.connect(properties=props(PacketTypes.CONNECT, SessionExpiryInterval=60))
    assert rc == 0 and not flags.session_present, (rc, flags)
    a.subscribe("paho/se/t", 1)
    a.disconnect()
    pub = Client(host, port, "paho-se-pub")
    pub.connect()
    assert pub.publish("paho/se/t", b"while away", 1)[0] == 0
    a = Client(host, port, "paho-se")
    flags, rc, _ = a.connect(clean_start=False, properties=props(PacketTypes.CONNECT, SessionExpiryInterval=0))
    assert flags.session_present, "the session was kept"
    a.wait_payload("while away")
    a.disconnect()
    b = Client(host, port, "paho-se")
    flags, _, _ = b.connect(clean_start=False)
    assert not flags.session_present, "session expiry 0 at the last connection ended it"
    b.disconnect()
    pub.disconnect()


def message_expiry(host, port):
    a = Client(host, port, "paho-me")
    a.connect(properties=props(PacketTypes.CONNECT, SessionExpiryInterval=60))
    a.subscribe("paho/me/#", 1)
    a.disconnect()
    pub = Client(host, port, "paho-me-pub")
    pub.connect()
    pub.publish("paho/me/short", b"short", 1, props(PacketTypes.PUBLISH, MessageExpiryInterval=1))
    pub.publish("paho/me/long", b"long", 1, props(PacketTypes.PUBLISH, MessageExpiryInterval=120))
    time.sleep(2.5)  # the short message's lifetime, and more
    a = Client(host, port, "paho-me")
    a.connect(clean_start=False, properties=props(PacketTypes.CONNECT, SessionExpiryInterval=60))
    m = a.wait_payload("long")
    left = m.properties.MessageExpiryInterval
    assert 100 <= left <= 118, f"time left {left}"
    # "long" was queued after "short": had "short" been sent, it would be here now.
    assert a.payloads() == ["long"], a.payloads()
    a.disconnect()
    pub.disconnect()


def topic_alias(host, port):
    sub = Client(host, port, "paho-ta-sub")
    sub.connect()
    sub.subscribe("paho/ta/#", 1)
    pub = Client(host, port, "paho-ta-pub")
    _, _, p = pub.connect()
    assert p.TopicAliasMaximum >= 1, "the broker takes topic aliases"
    pub.publish("paho/ta/long/topic", b"one", 1, props(PacketTypes.PUBLISH, TopicAlias=1))
    pub.publish("", b"two", 1, props(PacketTypes.PUBLISH, TopicAlias=1))
    sub.wait_payload("two")
    got = [(m.topic, m.payload.decode()) for m in sub.messages]
    assert got == [("paho/ta/long/topic", "one"), ("paho/ta/long/topic", "two")], got
    sub.disconnect()
    pub.disconnect()


def will_delay(host, port):
    watcher = Client(host, port, "paho-wd-watch")
    watcher.connect()
    watcher.subscribe("paho/wd/#", 1)
    w = Client(host, port, "paho-wd")
    w.connect(
        properties=props(PacketTypes.CONNECT, SessionExpiryInterval=30),
        will=("paho/wd/will", b"gone", 1, props(PacketTypes.WILLMESSAGE, WillDelayInterval=2)),
    )
    dropped = time.monotonic()
    w.drop()
    m = watcher.wait_payload("gone")
    waited = time.monotonic() - dropped
    assert waited >= 1.8, f"the will came after {waited:.2f}s, before its 2 s delay"
    assert m.topic == "paho/wd/will"
    watcher.disconnect()


def deny_reasons(host, port):
    # The policy plugin's client_reason and reason code reach paho; its log reason does not.
    bad = Client(host, port, "paho-bad", password="wrong")
    _, rc, p = bad.connect()
    assert rc.value == 0x86, rc
    assert getattr(p, "ReasonString", None) == "bad credentials", vars(p)
    bad.c.loop_stop()
    c = Client(host, port, "paho-deny")
    c.connect()
    codes, p = c.subscribe("secret/x", 1)
    assert [r.value for r in codes] == [0x87], codes
    assert p.ReasonString == "no secrets here", vars(p)
    rc, p = c.publish("ro/x", b"x", 1)
    assert rc.value == 0x97, rc
    assert p.ReasonString == "read-only here", vars(p)
    rc, _ = c.publish("ok/x", b"x", 1)
    assert rc.value == 0, rc
    c.disconnect()


def shared_member_leaves(host, port):
    # Three members of one group at QoS 1; one takes five messages without acknowledging
    # them and drops its connection while the rest are published: every message reaches
    # a member that acknowledges it.
    members = []
    for i in (1, 2):
        m = Client(host, port, f"paho-sh-{i}")
        m.connect()
        m.subscribe("$share/pool/paho/sh/#", 1)
        members.append(m)
    taker = Client(host, port, "paho-sh-taker", manual_ack=True)
    taker.connect()
    taker.subscribe("$share/pool/paho/sh/#", 1)
    pub = Client(host, port, "paho-sh-pub")
    pub.connect()
    n, dropped = 150, False
    for i in range(1, n + 1):
        assert pub.publish("paho/sh/job", str(i).encode(), 1)[0] == 0
        if not dropped and len(taker.messages) >= 5:
            taker.drop()  # never acknowledged what it took
            dropped = True
    assert dropped, "the taker got its five messages"
    want = {str(i) for i in range(1, n + 1)}
    def union():
        return set(members[0].payloads()) | set(members[1].payloads())
    members[0].wait("every message at an acknowledging member", lambda: union() >= want)
    taken = {m.payload.decode() for m in taker.messages}
    assert taken <= union(), f"left unacknowledged and lost: {sorted(taken - union())}"
    for m in members + [pub]:
        m.disconnect()


SCENARIOS = {
    f.__name__: f
    for f in [session_expiry, message_expiry, topic_alias, will_delay, deny_reasons, shared_member_leaves]
}

if __name__ == "__main__":
    host, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    SCENARIOS[name](host, port)
    print(f"ok {name}")
