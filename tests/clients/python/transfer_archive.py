"""Imports an image archive into berthd, or exports one from it, through the
Transfer service from Python's grpcio, as a program would: the archive
travels over a Streaming stream with containerd's flow control (the
receiver grants WindowUpdate windows, the sender sends Data of at most
32 KiB within them), progress over another.

    transfer_archive.py --target unix:///run/berth/berth.sock --import FILE
                        [--name NAME] [--prefix PREFIX] [--overwrite] [--digest-refs]
                        [--unpack overlayfs] [--platform linux/amd64] [--compress]
    transfer_archive.py --target ... --export IMAGE --out FILE [--platform P]
                        [--all-platforms] [--skip-manifest-json]

Prints one JSON object with the progress seen; a failed Transfer exits 3
and prints {"code": ..., "details": ...}.
"""

import argparse
import json
import queue
import sys
import tempfile
import threading
import uuid

import grpc

import api_check

PROTOS = [
    "containerd/services/transfer/v1/transfer.proto",
    "containerd/services/streaming/v1/streaming.proto",
    "containerd/types/transfer/imagestore.proto",
    "containerd/types/transfer/importexport.proto",
    "containerd/types/transfer/streaming.proto",
    "containerd/types/transfer/progress.proto",
    "containerd/types/platform.proto",
    "containerd/types/descriptor.proto",
]

MAX_DATA = 32 * 1024
WINDOW = 64 * 1024


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
        next(self.responses)

    def send(self, message):
        self.outgoing.put(pack(message))

    def close(self):
        self.outgoing.put(None)


def send_file(stream, path, errors):
    """Sends the file's bytes within the windows the daemon grants."""
    from containerd.types.transfer import streaming_pb2 as data_pb2

    window = [0]
    granted = threading.Condition()
    ended = [False]

    def grants():
        try:
            for message in stream.responses:
                update = data_pb2.WindowUpdate()
                update.ParseFromString(message.value)
                with granted:
                    window[0] += update.update
                    granted.notify_all()
        except grpc.RpcError as e:
            errors.append(str(e.details()))
        with granted:
            ended[0] = True
            granted.notify_all()

    threading.Thread(target=grants, daemon=True).start()
    with open(path, "rb") as archive:
        while True:
            with granted:
                while window[0] <= 0 and not ended[0]:
                    granted.wait()
                if ended[0] and window[0] <= 0:
                    break
                size = min(window[0], MAX_DATA)
            chunk = archive.read(size)
            if not chunk:
                break
            with granted:
                window[0] -= len(chunk)
            stream.send(data_pb2.Data(data=chunk))
    stream.close()


def receive_file(stream, path, done):
    """Grants windows and writes the Data that arrives until the daemon ends the stream."""
    from containerd.types.transfer import streaming_pb2 as data_pb2

    outstanding = 0
    with open(path, "wb") as out:
        stream.send(data_pb2.WindowUpdate(update=WINDOW))
        outstanding = WINDOW
        try:
            for message in stream.responses:
                data = data_pb2.Data()
                data.ParseFromString(message.value)
                out.write(data.data)
                outstanding -= len(data.data)
                if outstanding < WINDOW:
                    stream.send(data_pb2.WindowUpdate(update=WINDOW))
                    outstanding += WINDOW
        except grpc.RpcError:
            pass
    stream.close()
    done.set()


def platform_of(text):
    from containerd.types import platform_pb2

    parts = text.split("/")
    return platform_pb2.Platform(os=parts[0], architecture=parts[1], variant=parts[2] if len(parts) > 2 else "")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--import", dest="archive")
    parser.add_argument("--export")
    parser.add_argument("--out")
    parser.add_argument("--name", default="")
    parser.add_argument("--prefix")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--digest-refs", action="store_true")
    parser.add_argument("--unpack", default="")
    parser.add_argument("--platform", default="")
    parser.add_argument("--compress", action="store_true")
    parser.add_argument("--all-platforms", action="store_true")
    parser.add_argument("--skip-manifest-json", action="store_true")
    args = parser.parse_args()

    api_check.generate_stubs(tempfile.mkdtemp(prefix="berth-stubs-"), PROTOS)
    from containerd.services.streaming.v1 import streaming_pb2_grpc
    from containerd.services.transfer.v1 import transfer_pb2, transfer_pb2_grpc
    from containerd.types.transfer import imagestore_pb2, importexport_pb2, progress_pb2

    metadata = (("containerd-namespace", args.namespace),)
    channel = grpc.insecure_channel(args.target)
    streaming = streaming_pb2_grpc.StreamingStub(channel)
    transfer = transfer_pb2_grpc.TransferStub(channel)

    progress_id = f"progress-{uuid.uuid4()}"
    progress_stream = Stream(streaming, progress_id, metadata)
    events = []

    def read_progress():
        try:
            for message in progress_stream.responses:
                item = progress_pb2.Progress()
                item.ParseFromString(message.value)
                events.append({"event": item.event, "name": item.name, "digest": item.desc.digest})
        except grpc.RpcError:
            pass

    reader = threading.Thread(target=read_progress)
    reader.start()

    data_id = f"archive-{uuid.uuid4()}"
    data_stream = Stream(streaming, data_id, metadata)
    stream_errors = []
    received = threading.Event()
    if args.archive:
        threading.Thread(target=send_file, args=(data_stream, args.archive, stream_errors), daemon=True).start()
        source = importexport_pb2.ImageImportStream(stream=data_id, force_compress=args.compress)
        store = imagestore_pb2.ImageStore(name=args.name)
        if args.prefix is not None:
            store.extra_references.append(
                imagestore_pb2.ImageReference(
                    name=args.prefix, is_prefix=True, allow_overwrite=args.overwrite, add_digest=args.digest_refs
                )
            )
        if args.platform:
            store.platforms.append(platform_of(args.platform))
        if args.unpack:
            unpack = imagestore_pb2.UnpackConfiguration(snapshotter=args.unpack)
            if args.platform:
                unpack.platform.CopyFrom(platform_of(args.platform))
            store.unpacks.append(unpack)
        destination = store
    else:
        threading.Thread(target=receive_file, args=(data_stream, args.out, received), daemon=True).start()
        source = imagestore_pb2.ImageStore(name=args.export)
        destination = importexport_pb2.ImageExportStream(
            stream=data_id,
            all_platforms=args.all_platforms,
            skip_compatibility_manifest=args.skip_manifest_json,
        )
        if args.platform:
            destination.platforms.append(platform_of(args.platform))
    request = transfer_pb2.TransferRequest(
        source=pack(source),
        destination=pack(destination),
        options=transfer_pb2.TransferOptions(progress_stream=progress_id),
    )
    try:
        transfer.Transfer(request, metadata=metadata, timeout=600)
    except grpc.RpcError as e:
        progress_stream.close()
        data_stream.close()
        reader.join(timeout=10)
        print(json.dumps({"code": e.code().name, "details": e.details(), "progress": events}))
        sys.exit(3)
    if args.export:
        # The daemon ends the data stream once the archive is out.
        received.wait(timeout=60)
    progress_stream.close()
    reader.join(timeout=30)
    print(json.dumps({"progress": events, "stream_errors": stream_errors, "received": received.is_set()}))


if __name__ == "__main__":
    main()
