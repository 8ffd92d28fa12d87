"""berthd's gRPC API from Python's grpcio, as a programmatic client uses it.

Generates stubs from the project's protos (grpc_tools, at run time), then
calls Version, Namespaces create/list/delete, Events subscribe (seeing the
namespace create), Images list and Content read over the given target,
and prints one JSON object with what each call returned. Any failed call
ends the script with a non-zero exit and the gRPC status on stderr.

    api_check.py --target unix:///run/berth/berth.sock [--authority X]
                 [--ca ca.pem [--cert client.pem --key client.key]]
                 [--only version,namespaces]
"""

import argparse
import hashlib
import importlib
import json
import os
import queue
import sys
import tempfile
import threading
import time

import grpc
from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.path.join(HERE, "..", "..", "..", "proto")
# Seconds each unary call may take (a refused connection fails at its end).
TIMEOUT = 10
PROTOS = [
    "containerd/services/version/v1/version.proto",
    "containerd/services/namespaces/v1/namespace.proto",
    "containerd/services/events/v1/events.proto",
    "containerd/services/images/v1/images.proto",
    "containerd/services/content/v1/content.proto",
    "containerd/types/descriptor.proto",
    "containerd/events/namespace.proto",
]


def generate_stubs(out, protos=None):
    """Compiles `protos` (this script's by default) into `out` and puts it
    on the import path."""
    well_known = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    args = ["protoc", f"-I{PROTO_ROOT}", f"-I{well_known}", f"--python_out={out}", f"--grpc_python_out={out}"]
    if protoc.main(args + (protos or PROTOS)) != 0:
        sys.exit("protoc failed")
    sys.path.insert(0, out)


def module(path):
    return importlib.import_module(path)


def channel(args):
    options = []
    if args.authority is not None:
        options.append(("grpc.default_authority", args.authority))
    if args.ca:
        with open(args.ca, "rb") as ca:
            root = ca.read()
        key = cert = None
        if args.cert:
            with open(args.cert, "rb") as cert_file, open(args.key, "rb") as key_file:
                cert, key = cert_file.read(), key_file.read()
        credentials = grpc.ssl_channel_credentials(root, key, cert)
        if args.server_name:
            options.append(("grpc.ssl_target_name_override", args.server_name))
        return grpc.secure_channel(args.target, credentials, options=options)
    return grpc.insecure_channel(args.target, options=options)


def namespaced(namespace):
    return (("containerd-namespace", namespace),)


def check_version(ch, report):
    version = module("containerd.services.version.v1.version_pb2_grpc")
    empty = module("google.protobuf.empty_pb2")
    reply = version.VersionStub(ch).Version(empty.Empty(), timeout=TIMEOUT)
    report["version"] = {"version": reply.version, "revision": reply.revision}


def check_namespaces(ch, report):
    pb = module("containerd.services.namespaces.v1.namespace_pb2")
    stub = module("containerd.services.namespaces.v1.namespace_pb2_grpc").NamespacesStub(ch)
    name = f"py-{os.getpid()}"
    stub.Create(pb.CreateNamespaceRequest(namespace=pb.Namespace(name=name, labels={"from": "python"})), timeout=TIMEOUT)
    listed = [n.name for n in stub.List(pb.ListNamespacesRequest(), timeout=TIMEOUT).namespaces]
    stub.Delete(pb.DeleteNamespaceRequest(name=name), timeout=TIMEOUT)
    after = [n.name for n in stub.List(pb.ListNamespacesRequest(), timeout=TIMEOUT).namespaces]
    report["namespaces"] = {"created": name, "listed": listed, "after_delete": after}


def check_events(ch, report):
    events_pb = module("containerd.services.events.v1.events_pb2")
    events = module("containerd.services.events.v1.events_pb2_grpc").EventsStub(ch)
    ns_pb = module("containerd.services.namespaces.v1.namespace_pb2")
    namespaces = module("containerd.services.namespaces.v1.namespace_pb2_grpc").NamespacesStub(ch)
    event_pb = module("containerd.events.namespace_pb2")
    name = f"py-events-{os.getpid()}"
    stream = events.Subscribe(events_pb.SubscribeRequest(filters=['topic=="/namespaces/create"']), timeout=30)
    seen = queue.Queue()

    def read():
        try:
            for envelope in stream:
                seen.put(envelope)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                seen.put(error)

    threading.Thread(target=read, daemon=True).start()
    # Created until the subscription sees one (it may start after the first).
    envelope = None
    for attempt in range(50):
        namespaces.Create(ns_pb.CreateNamespaceRequest(namespace=ns_pb.Namespace(name=f"{name}-{attempt}")), timeout=TIMEOUT)
        try:
            envelope = seen.get(timeout=0.2)
            break
        except queue.Empty:
            continue
    stream.cancel()
    if envelope is None or isinstance(envelope, Exception):
        sys.exit(f"no /namespaces/create event: {envelope}")
    # containerd's type URLs have no "type.googleapis.com/" prefix, which
    # Any.Unpack insists on: the value is parsed directly, as containerd's
    # own clients do.
    created = event_pb.NamespaceCreate()
    created.ParseFromString(envelope.event.value)
    for attempt in range(50):
        try:
            namespaces.Delete(ns_pb.DeleteNamespaceRequest(name=f"{name}-{attempt}"), timeout=TIMEOUT)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
    report["events"] = {
        "topic": envelope.topic,
        "type_url": envelope.event.type_url,
        "namespace": envelope.namespace,
        "name": created.name,
    }


def check_events_held(ch, report):
    """An event stream that stays open across whatever the caller does
    between "ready" (printed) and a line on stdin: one namespace created
    before and one after must both come through the same stream."""
    events_pb = module("containerd.services.events.v1.events_pb2")
    events = module("containerd.services.events.v1.events_pb2_grpc").EventsStub(ch)
    ns_pb = module("containerd.services.namespaces.v1.namespace_pb2")
    namespaces = module("containerd.services.namespaces.v1.namespace_pb2_grpc").NamespacesStub(ch)
    event_pb = module("containerd.events.namespace_pb2")
    stream = events.Subscribe(events_pb.SubscribeRequest(filters=['topic=="/namespaces/create"']), timeout=120)
    seen = queue.Queue()

    def read():
        try:
            for envelope in stream:
                created = event_pb.NamespaceCreate()
                created.ParseFromString(envelope.event.value)
                seen.put(created.name)
        except grpc.RpcError as error:
            seen.put(error)

    threading.Thread(target=read, daemon=True).start()
    names = []
    # Until the stream is surely live: a create it sees.
    for attempt in range(50):
        name = f"py-held-{os.getpid()}-{attempt}"
        namespaces.Create(ns_pb.CreateNamespaceRequest(namespace=ns_pb.Namespace(name=name)), timeout=TIMEOUT)
        names.append(name)
        try:
            first = seen.get(timeout=0.2)
            break
        except queue.Empty:
            continue
    else:
        sys.exit("the event stream saw nothing")
    print("ready", flush=True)
    sys.stdin.readline()
    after = f"py-held-{os.getpid()}-after"
    namespaces.Create(ns_pb.CreateNamespaceRequest(namespace=ns_pb.Namespace(name=after)), timeout=TIMEOUT)
    names.append(after)
    got = None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            got = seen.get(timeout=1)
        except queue.Empty:
            continue
        if isinstance(got, Exception) or got == after:
            break
    stream.cancel()
    for name in names:
        namespaces.Delete(ns_pb.DeleteNamespaceRequest(name=name), timeout=TIMEOUT)
    if isinstance(got, Exception):
        sys.exit(f"the held stream broke: {got.code()}: {got.details()}")
    report["events_held"] = {"before": first, "after": got}


def check_images_and_content(ch, report, namespace):
    images_pb = module("containerd.services.images.v1.images_pb2")
    images = module("containerd.services.images.v1.images_pb2_grpc").ImagesStub(ch)
    content_pb = module("containerd.services.content.v1.content_pb2")
    content = module("containerd.services.content.v1.content_pb2_grpc").ContentStub(ch)
    listed = images.List(images_pb.ListImagesRequest(), metadata=namespaced(namespace), timeout=TIMEOUT).images
    report["images"] = [{"name": i.name, "target": i.target.digest} for i in listed]
    blobs = []
    for reply in content.List(content_pb.ListContentRequest(), metadata=namespaced(namespace), timeout=TIMEOUT):
        blobs.extend(reply.info)
    read = []
    for info in blobs:
        data = b"".join(
            r.data
            for r in content.Read(
                content_pb.ReadContentRequest(digest=info.digest), metadata=namespaced(namespace), timeout=30
            )
        )
        read.append(
            {"digest": info.digest, "size": info.size, "read": len(data), "sha256": "sha256:" + hashlib.sha256(data).hexdigest()}
        )
    report["content"] = read


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--authority")
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--ca")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--server-name")
    parser.add_argument("--only", default="version,namespaces,events,images")
    parser.add_argument("--timeout", type=float, default=10)
    args = parser.parse_args()
    global TIMEOUT
    TIMEOUT = args.timeout
    with tempfile.TemporaryDirectory(prefix="berth-py-stubs") as out:
        generate_stubs(out)
        report = {}
        with channel(args) as ch:
            try:
                for part in args.only.split(","):
                    if part == "version":
                        check_version(ch, report)
                    elif part == "namespaces":
                        check_namespaces(ch, report)
                    elif part == "events":
                        check_events(ch, report)
                    elif part == "events-held":
                        check_events_held(ch, report)
                    elif part == "images":
                        check_images_and_content(ch, report, args.namespace)
                    else:
                        sys.exit(f"unknown check {part}")
            except grpc.RpcError as error:
                sys.exit(f"{error.code()}: {error.details()}")
        print(json.dumps(report))


if __name__ == "__main__":
    main()
