"""A misbehaving client, for berthd's connection limits.

Opens `--abandon` connections to the Unix socket and leaves them open and
unused for `--hold` seconds, then makes `--calls` concurrent Version calls
spread over `--channels` connections of their own, and prints one JSON
object: how many connections the daemon closed at once (past
max_connections), and the calls' status codes.

    load_check.py --socket /run/berth/berth.sock [--abandon 200] [--hold 3]
                  [--calls 1000] [--channels 10]
"""

import argparse
import collections
import json
import os
import socket
import sys
import tempfile
import time

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import api_check  # noqa: E402  (stub generation)


def abandon(path, count, hold):
    """Opens `count` connections and holds them; how many were closed by
    the daemon within the hold."""
    held = []
    for _ in range(count):
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            connection.connect(path)
        except OSError:
            connection.close()
            continue
        connection.setblocking(False)
        held.append(connection)
    deadline = time.monotonic() + hold
    closed = set()
    while time.monotonic() < deadline:
        for index, connection in enumerate(held):
            if index in closed:
                continue
            try:
                if connection.recv(1) == b"":
                    closed.add(index)
            except BlockingIOError:
                pass
            except OSError:
                closed.add(index)
        time.sleep(0.05)
    for connection in held:
        connection.close()
    return len(held), len(closed)


def calls(target, count, channels):
    version = api_check.module("containerd.services.version.v1.version_pb2_grpc")
    empty = api_check.module("google.protobuf.empty_pb2")
    # A subchannel pool of each channel's own: one connection per channel.
    opened = [
        grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(channels)
    ]
    stubs = [version.VersionStub(ch) for ch in opened]
    futures = [stubs[i % channels].Version.future(empty.Empty(), timeout=60) for i in range(count)]
    codes = collections.Counter()
    for future in futures:
        try:
            future.result()
            codes["OK"] += 1
        except grpc.RpcError as error:
            codes[error.code().name] += 1
    for ch in opened:
        ch.close()
    return dict(codes)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--socket", required=True)
    parser.add_argument("--abandon", type=int, default=200)
    parser.add_argument("--hold", type=float, default=3)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--channels", type=int, default=10)
    args = parser.parse_args()
    report = {}
    report["opened"], report["closed_by_daemon"] = abandon(args.socket, args.abandon, args.hold)
    if args.calls:
        with tempfile.TemporaryDirectory(prefix="berth-py-stubs") as out:
            api_check.generate_stubs(out)
            report["codes"] = calls(f"unix://{args.socket}", args.calls, args.channels)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
