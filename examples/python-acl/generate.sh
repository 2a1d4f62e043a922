#!/usr/bin/env bash
# Generates the Python gRPC stubs of the Tandem plugin contract from the .proto, the only
# source of truth. Nothing generated is checked in.
#
#   ./generate.sh [OUT_DIR]      (default: gen/ beside this script)
#
# Uses $PYTHON (default: python3), which must have grpcio-tools installed
# (pip install -r requirements.txt). grpc_tools bundles google/protobuf/*.proto, so no
# protoc is needed on the machine.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
proto_root="$here/../../proto"
out="${1:-$here/gen}"
python="${PYTHON:-python3}"
mkdir -p "$out"
"$python" -m grpc_tools.protoc \
  -I "$proto_root" \
  --python_out="$out" \
  --grpc_python_out="$out" \
  "$proto_root/tandem/plugin/v1/plugin.proto"
echo "stubs written to $out"
