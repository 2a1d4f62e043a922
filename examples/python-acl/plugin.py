"""tandem-python-acl: a Tandem TopicFilter plugin written in Python against the .proto alone.

It serves the gRPC service tandem.plugin.v1.Plugin with stubs generated from
proto/tandem/plugin/v1/plugin.proto (see generate.sh), plus the standard gRPC health service:

- Describe: declares ROLE_TOPIC_FILTER and takes the pushed config (see acl.py); a config it
  cannot accept is answered INVALID_ARGUMENT with what is wrong, and the broker refuses it.
- TopicFilter: the ACL's verdict, with the configured cache_ttl_ms.
- Authenticate and Events: not overridden, so grpcio answers UNIMPLEMENTED (the broker calls
  neither: the plugin declares no auth role and asks for no event kinds).

    python plugin.py [--listen ADDR] [--stubs DIR]

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
        os.makedirs(parent, exist_ok=True)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ValueError(f"{path}: a file that is not a socket is in the way")
    os.remove(path)


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


def build_servicer(pb, pb_grpc, grpc, json_format):
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

    class AclServicer(pb_grpc.PluginServicer):
        """Describe and TopicFilter; the inherited Authenticate and Events answer UNIMPLEMENTED."""

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
            return pb.DescribeResponse(name=NAME, version=VERSION, roles=[pb.ROLE_TOPIC_FILTER])

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
    args = parser.parse_args(argv)
    listen = args.listen or os.environ.get(LISTEN_ENV) or DEFAULT_LISTEN
    try:
        address, socket_path = parse_listen(listen)
        if socket_path:
            prepare_socket(socket_path)
    except (ValueError, OSError) as err:
        sys.exit(f"{NAME}: {err}")

    sys.path.insert(0, HERE)
    pb, pb_grpc = load_stubs(os.path.abspath(args.stubs))
    import grpc
    from google.protobuf import json_format
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    pb_grpc.add_PluginServicer_to_server(build_servicer(pb, pb_grpc, grpc, json_format), server)
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
