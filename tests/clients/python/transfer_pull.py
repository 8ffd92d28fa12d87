"""Pulls (or, with --push, pushes) an image through berthd's Transfer service from Python's grpcio,
as a program would: opens a Streaming stream for progress, calls
Transfer(OCIRegistry -> ImageStore) with an unpack, and prints one JSON
object with the progress it saw. With --user/--password it answers the
daemon's credential questions on an auth stream.

    transfer_pull.py --target unix:///run/berth/berth.sock --ref HOST/REPO:TAG
                     [--name NAME] [--namespace default] [--snapshotter overlayfs]
                     [--platform linux/amd64] [--user U --password P]
                     [--scheme http]

A failed Transfer exits 3 and prints {"code": ..., "details": ...}.
"""

import argparse
import json
import os
import queue
import sys
import tempfile
import threading
import time
import uuid

import grpc

import api_check

PROTOS = [
    "containerd/services/transfer/v1/transfer.proto",
    "containerd/services/streaming/v1/streaming.proto",
    "containerd/types/transfer/registry.proto",
    "containerd/types/transfer/imagestore.proto",
    "containerd/types/transfer/progress.proto",
    "containerd/types/platform.proto",
    "containerd/types/descriptor.proto",
]


def pack(message):
    """An Any with the bare full name, as containerd's clients send."""
    from google.protobuf import any_pb2

    return any_pb2.Any(type_url=message.DESCRIPTOR.full_name, value=message.SerializeToString())


class Stream:
    """A Streaming stream: the StreamInit, then messages both ways."""

    def __init__(self, stub, stream_id, metadata):
        from containerd.services.streaming.v1 import streaming_pb2

        self.outgoing = queue.Queue()
        self.outgoing.put(pack(streaming_pb2.StreamInit(id=stream_id)))
        self.responses = stub.Stream(iter(self.outgoing.get, None), metadata=metadata)
        # The daemon's ack: the stream is registered.
        next(self.responses)

    def send(self, message):
        self.outgoing.put(pack(message))

    def close(self):
        self.outgoing.put(None)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--ref", required=True)
    parser.add_argument("--name", default="")
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--snapshotter", default="overlayfs")
    parser.add_argument("--platform", default="")
    parser.add_argument("--user")
    parser.add_argument("--password")
    parser.add_argument("--scheme", default="")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds the Transfer call may take")
    parser.add_argument("--push", metavar="IMAGE", help="push image IMAGE to --ref instead of pulling")
    args = parser.parse_args()

    api_check.generate_stubs(tempfile.mkdtemp(prefix="berth-stubs-"), PROTOS)
    from containerd.services.streaming.v1 import streaming_pb2_grpc
    from containerd.services.transfer.v1 import transfer_pb2, transfer_pb2_grpc
    from containerd.types import platform_pb2
    from containerd.types.transfer import imagestore_pb2, progress_pb2, registry_pb2

    metadata = (("containerd-namespace", args.namespace),)
    channel = grpc.insecure_channel(args.target)
    streaming = streaming_pb2_grpc.StreamingStub(channel)
    transfer = transfer_pb2_grpc.TransferStub(channel)

    progress_id = f"progress-{uuid.uuid4()}"
    progress_stream = Stream(streaming, progress_id, metadata)
    events = []
    begun = time.monotonic()

    def read_progress():
        try:
            for message in progress_stream.responses:
                if not message.type_url.endswith("containerd.types.transfer.Progress"):
                    continue
                item = progress_pb2.Progress()
                item.ParseFromString(message.value)
                events.append(
                    {
                        "type": message.type_url,
                        "event": item.event,
                        "name": item.name,
                        "progress": item.progress,
                        "total": item.total,
                        "digest": item.desc.digest,
                        "at": round(time.monotonic() - begun, 3),
                    }
                )
        except grpc.RpcError:
            pass

    reader = threading.Thread(target=read_progress)
    reader.start()

    resolver = registry_pb2.RegistryResolver(default_scheme=args.scheme)
    auth_questions = []
    if args.user is not None:
        auth_id = f"auth-{uuid.uuid4()}"
        auth_stream = Stream(streaming, auth_id, metadata)
        resolver.auth_stream = auth_id

        def answer():
            try:
                for message in auth_stream.responses:
                    question = registry_pb2.AuthRequest()
                    question.ParseFromString(message.value)
                    auth_questions.append({"host": question.host, "reference": question.reference})
                    auth_stream.send(
                        registry_pb2.AuthResponse(
                            authType=registry_pb2.CREDENTIALS, username=args.user, secret=args.password
                        )
                    )
            except grpc.RpcError:
                pass

        threading.Thread(target=answer, daemon=True).start()

    unpack = imagestore_pb2.UnpackConfiguration(snapshotter=args.snapshotter)
    store = imagestore_pb2.ImageStore(name=args.name, unpacks=[unpack])
    if args.platform:
        parts = args.platform.split("/")
        wanted = platform_pb2.Platform(os=parts[0], architecture=parts[1], variant=parts[2] if len(parts) > 2 else "")
        store.platforms.append(wanted)
        unpack.platform.CopyFrom(wanted)
        store.unpacks[0].platform.CopyFrom(wanted)
    source = registry_pb2.OCIRegistry(reference=args.ref, resolver=resolver)
    if args.push:
        # The other way: the image store is the source.
        source, store = imagestore_pb2.ImageStore(name=args.push, platforms=store.platforms), source
    request = transfer_pb2.TransferRequest(
        source=pack(source),
        destination=pack(store),
        options=transfer_pb2.TransferOptions(progress_stream=progress_id),
    )
    started = time.monotonic()
    try:
        transfer.Transfer(request, metadata=metadata, timeout=args.timeout)
    except grpc.RpcError as e:
        progress_stream.close()
        reader.join(timeout=10)
        print(json.dumps({"code": e.code().name, "details": e.details(), "progress": events}))
        sys.exit(3)
    seconds = time.monotonic() - started
    progress_stream.close()
    reader.join(timeout=30)
    print(json.dumps({"progress": events, "auth": auth_questions, "seconds": seconds}))


if __name__ == "__main__":
    main()
