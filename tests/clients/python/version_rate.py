"""Unary Version calls per second from one Python grpcio client, made one
after another on one channel for `--seconds`, after a warm-up. Prints the
rate. Used by scripts/bench-python-version.sh.

    version_rate.py --target unix:///run/berth/berth.sock [--seconds 3]
"""

import argparse
import os
import sys
import tempfile
import time

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import api_check  # noqa: E402  (stub generation)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--seconds", type=float, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="berth-py-stubs") as out:
        api_check.generate_stubs(out)
        version = api_check.module("containerd.services.version.v1.version_pb2_grpc")
        empty = api_check.module("google.protobuf.empty_pb2").Empty()
        with grpc.insecure_channel(args.target) as channel:
            stub = version.VersionStub(channel)
            for _ in range(200):
                stub.Version(empty, timeout=10)
            calls = 0
            start = time.perf_counter()
            deadline = start + args.seconds
            while time.perf_counter() < deadline:
                stub.Version(empty, timeout=10)
                calls += 1
            print(f"{calls / (time.perf_counter() - start):.0f}")


if __name__ == "__main__":
    main()
