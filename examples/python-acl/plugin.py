"""tandem-python-acl: a Tandem TopicFilter plugin written in Python against the .proto alone.

It serves the gRPC service tandem.plugin.v1.Plugin with stubs generated from
proto/tandem/plugin/v1/plugin.proto (see generate.sh), plus the standard gRPC health service:

- Describe: declares ROLE_TOPIC_FILTER and takes the pushed config (see acl.py); a config it
  cannot accept is answered INVALID_ARGUMENT with what is wrong, and the broker refuses it.
- TopicFilter: the ACL's verdict, with the configured cache_ttl_ms.
- Events (with --events-log FILE): declares broker_pre_start, client_connected,
  client_disconnected and message_received, writes each event received as one JSON line to FILE
  ({"seq", "kind", "client_id", "topic"}) and acks each batch. grpcio sends a stream's response
  headers only with its first message, and this handler answers only after a batch: the broker
  must not wait for headers before sending (it does not).
- Authenticate: not overridden, so grpcio answers UNIMPLEMENTED (the broker does not call it: the
  plugin declares no auth role).

    python plugin.py [--listen ADDR] [--stubs DIR] [--events-log FILE] [--token-file FILE]

With --token-file FILE (else $TANDEM_PLUGIN_TOKEN_FILE) every call of the Plugin service must
carry `authorization: Bearer <the file's token>` (the broker's plugins.<alias>.token_file) or is
answered UNAUTHENTICATED; gRPC health stays open to probes. Without one, a TCP address that is not
loopback is refused unless --insecure is given, as in the Rust SDK. A unix socket is made 0600.

ADDR is unix:///abs/path.sock, unix:relative.sock, tcp://IP:PORT or http://IP:PORT
(localhost stands for 127.0.0.1), else $TANDEM_PLUGIN_LISTEN, else tcp://127.0.0.1:50051: the
same syntax as the Rust SDK. DIR holds the generated stubs (default: gen/ beside this file).
SIGTERM or SIGINT: health turns NOT_SERVING, in-flight calls drain (5 s at most), the unix
socket is removed, and the process exits 0.
"""

import argparse
import ipaddress
import json
import os
import signal
import stat
import sys
import threading
from concurrent import futures

HERE = os.path.dirname(os.path.abspath(__file__))
NAME = "tandem-python-acl"
VERSION = "0.1.0"
DEFAULT_LISTEN = "tcp://127.0.0.1:50051"
LISTEN_ENV = "TANDEM_PLUGIN_LISTEN"
DRAIN_SECS = 5.0


def log(msg, **fields):
    """One line on stderr (the broker captures a command: plugin's stderr in its own log)."""
    extra = "".join(f" {k}={v}" for k, v in fields.items())
    print(f"{NAME}: {msg}{extra}", file=sys.stderr, flush=True)


def parse_listen(addr):
    """Returns (grpc_address, unix_socket_path_or_None), or raises ValueError.

    Mirrors sdk-rust's ListenAddr: unix:///abs, unix:rel, tcp://IP:PORT, http://IP:PORT.
    """
    for prefix in ("unix://", "unix:"):
        if addr.startswith(prefix):
            path = addr[len(prefix):]
            if not path:
                raise ValueError(f"invalid listen address {addr!r}: the socket path is empty")
            return "unix:" + path, path
    for prefix in ("tcp://", "http://"):
        if addr.startswith(prefix):
            authority = addr[len(prefix):].rstrip("/")
            break
    else:
        raise ValueError(f"invalid listen address {addr!r}: unknown scheme (use unix:// or tcp://)")
    if authority.startswith("localhost:"):
        authority = "127.0.0.1:" + authority[len("localhost:"):]
    host, sep, port = authority.rpartition(":")
    try:
        ipaddress.ip_address(host.strip("[]"))
        if not sep or not 0 <= int(port) <= 65535:
            raise ValueError
    except ValueError:
        raise ValueError(
            f"invalid listen address {addr!r}: expected an IP address and a port, "
            "such as 127.0.0.1:50051 or [::]:50051"
        ) from None
    return authority, None


def prepare_socket(path):
    """Creates the socket's directory and removes a stale socket left by a killed run."""
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, mode=0o700, exist_ok=True)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ValueError(f"{path}: a file that is not a socket is in the way")
    os.remove(path)


def read_token(path):
    """The bearer token in a file (surrounding whitespace ignored), or raises ValueError."""
    with open(path, encoding="ascii") as f:
        token = f.read().strip()
    if not token or any(not (0x21 <= ord(c) <= 0x7E) for c in token):
        raise ValueError(f"{path}: the token must be printable ASCII without spaces, not empty")
    return token


def token_interceptor(grpc, token, service):
    """A server interceptor answering UNAUTHENTICATED to Plugin calls without the token."""
    import hmac

    expected = ("Bearer " + token).encode()

    def refuse(_request, context):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "this plugin requires the broker's bearer token")

    class TokenInterceptor(grpc.ServerInterceptor):
        def intercept_service(self, continuation, details):
            if not details.method.startswith(f"/{service}/"):
                return continuation(details)  # gRPC health: open to probes
            given = dict(details.invocation_metadata).get("authorization", "")
            if hmac.compare_digest(given.encode(), expected):
                return continuation(details)
            handler = continuation(details)
            if handler is not None and handler.request_streaming:
                return grpc.stream_unary_rpc_method_handler(refuse) if not handler.response_streaming \
                    else grpc.stream_stream_rpc_method_handler(lambda it, ctx: refuse(None, ctx))
            return grpc.unary_unary_rpc_method_handler(refuse)

    return TokenInterceptor()


def load_stubs(stubs_dir):
    """Imports the generated modules, with a clear message when generate.sh was not run."""
    sys.path.insert(0, stubs_dir)
    try:
        from tandem.plugin.v1 import plugin_pb2, plugin_pb2_grpc  # noqa: E402
    except ImportError as err:
        sys.exit(
            f"{NAME}: cannot import the generated stubs from {stubs_dir} ({err}); "
            "run generate.sh first (see README.md)"
        )
    return plugin_pb2, plugin_pb2_grpc


def event_line(event):
    """One event as the JSON object --events-log writes."""
    kind = event.WhichOneof("kind")
    line = {"seq": event.sequence, "kind": kind}
    if event.HasField("client"):
        line["client_id"] = event.client.client_id
    if kind == "message_received":
        line["topic"] = event.message_received.message.topic
    return line


def build_servicer(pb, pb_grpc, grpc, json_format, events_log=None):
    from acl import Acl, ConfigError

    actions = {
        pb.ACTION_PUBLISH: "publish",
        pb.ACTION_SUBSCRIBE: "subscribe",
        pb.ACTION_RECEIVE: "receive",
    }
    verdicts = {
        "allow": pb.VERDICT_ALLOW,
        "deny": pb.VERDICT_DENY,
        "abstain": pb.VERDICT_ABSTAIN,
    }

    event_kinds = [
        pb.EVENT_KIND_BROKER_PRE_START,
        pb.EVENT_KIND_CLIENT_CONNECTED,
        pb.EVENT_KIND_CLIENT_DISCONNECTED,
        pb.EVENT_KIND_MESSAGE_RECEIVED,
    ] if events_log else []

    class AclServicer(pb_grpc.PluginServicer):
        """Describe, TopicFilter and (with an events log) Events; Authenticate answers UNIMPLEMENTED."""

        def __init__(self):
            self._lock = threading.Lock()
            self._acl = None  # set by the first Describe; the latest one wins

        def Describe(self, request, context):
            config = json_format.MessageToDict(request.config) if request.HasField("config") else {}
            try:
                acl = Acl.from_config(config)
            except ConfigError as err:
                log("config refused", alias=request.plugin_alias, cause=json.dumps(str(err)))
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
            with self._lock:
                self._acl = acl
            log(
                "configured",
                alias=request.plugin_alias,
                generation=request.config_generation,
                default=acl.default,
                cache_ttl_ms=acl.cache_ttl_ms,
            )
            return pb.DescribeResponse(
                name=NAME, version=VERSION, roles=[pb.ROLE_TOPIC_FILTER], event_kinds=event_kinds
            )

        def Events(self, request_iterator, context):
            if not events_log:
                context.abort(grpc.StatusCode.UNIMPLEMENTED, "no event kinds were asked for")
            # Nothing is sent before the first batch has arrived: grpcio's headers go out with
            # the first ack.
            for batch in request_iterator:
                if batch.dropped_events:
                    log("events dropped by the broker", count=batch.dropped_events)
                with open(events_log, "a", encoding="utf-8") as out:
                    for event in batch.events:
                        out.write(json.dumps(event_line(event)) + "\n")
                if batch.events:
                    yield pb.EventAck(acked_sequence=batch.events[-1].sequence)

        def TopicFilter(self, request, context):
            with self._lock:
                acl = self._acl
            if acl is None:
                # The broker always describes first; anything else is not a decision to guess.
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, "not configured yet: Describe first")
            action = actions.get(request.action)
            if action is None:
                return pb.TopicFilterResponse(
                    verdict=pb.VERDICT_DENY, reason=f"unknown action {request.action}"
                )
            verdict, reason = acl.decide(action, request.topic, request.username, request.client_id)
            return pb.TopicFilterResponse(
                verdict=verdicts[verdict], reason=reason, cache_ttl_ms=acl.cache_ttl_ms
            )

    return AclServicer()


def main(argv=None):
    parser = argparse.ArgumentParser(prog=NAME, description="Tandem TopicFilter plugin (MQTT topic ACL)")
    parser.add_argument("--listen", help=f"unix:///path.sock or tcp://IP:PORT (default ${LISTEN_ENV}, else {DEFAULT_LISTEN})")
    parser.add_argument("--stubs", default=os.path.join(HERE, "gen"), help="directory of the generated stubs")
    parser.add_argument("--events-log", help="ask for events and append each one to this file as a JSON line")
    parser.add_argument("--token-file", help="require the broker's bearer token from this file (default $TANDEM_PLUGIN_TOKEN_FILE)")
    parser.add_argument("--insecure", action="store_true", help="serve a non-loopback TCP address without a token")
    args = parser.parse_args(argv)
    listen = args.listen or os.environ.get(LISTEN_ENV) or DEFAULT_LISTEN
    token_file = args.token_file or os.environ.get("TANDEM_PLUGIN_TOKEN_FILE") or None
    try:
        address, socket_path = parse_listen(listen)
        if socket_path:
            prepare_socket(socket_path)
        token = read_token(token_file) if token_file else None
        if socket_path is None and token is None and not args.insecure:
            host = address.rpartition(":")[0].strip("[]")
            if not ipaddress.ip_address(host).is_loopback:
                raise ValueError(
                    f"refusing to serve on {listen} without authentication: give --token-file "
                    "(or TANDEM_PLUGIN_TOKEN_FILE), listen on a unix socket or 127.0.0.1, or --insecure"
                )
    except (ValueError, OSError) as err:
        sys.exit(f"{NAME}: {err}")

    sys.path.insert(0, HERE)
    pb, pb_grpc = load_stubs(os.path.abspath(args.stubs))
    import grpc
    from google.protobuf import json_format
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    service_name = pb.DESCRIPTOR.services_by_name["Plugin"].full_name
    interceptors = [token_interceptor(grpc, token, service_name)] if token else []
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), interceptors=interceptors)
    pb_grpc.add_PluginServicer_to_server(build_servicer(pb, pb_grpc, grpc, json_format, args.events_log), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    service = pb.DESCRIPTOR.services_by_name["Plugin"].full_name
    for name in ("", service):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)

    try:
        port = server.add_insecure_port(address)
    except RuntimeError as err:
        sys.exit(f"{NAME}: cannot listen on {listen}: {err}")
    if socket_path is None and port == 0:
        sys.exit(f"{NAME}: cannot listen on {listen}")

    stop = threading.Event()
    signals = {}

    def on_signal(signum, _frame):
        signals["name"] = signal.Signals(signum).name
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    if socket_path:
        os.chmod(socket_path, 0o600)  # the broker's user alone (a directory made here is 0700)
    log("listening", addr=listen if socket_path else f"tcp://{address.rpartition(':')[0]}:{port}")
    while not stop.wait(1.0):
        pass
    log(f"{signals.get('name', 'signal')} received; shutting down")
    health_servicer.enter_graceful_shutdown()
    server.stop(DRAIN_SECS).wait()
    if socket_path:
        try:
            os.remove(socket_path)
        except FileNotFoundError:
            pass
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
