#!/usr/bin/env python3
"""A real gRPC server and client (grpcio) for testing gRPC through edgegate.

Messages are raw bytes (no protobuf codegen needed); the wire protocol is real gRPC:
HTTP/2, length-prefixed messages, grpc-status / grpc-message trailers.

  grpc_check.py serve              # prints "listening PORT", serves until killed
  grpc_check.py client TARGET [--tls CA_FILE --sni NAME]
                                   # runs every check against TARGET, exit 0 if all pass
"""
import argparse
import sys
import threading
import time
from concurrent import futures

import grpc

SERVICE = "edgegate.test.Echo"
identity = lambda b: b  # noqa: E731


def unary(request, context):
    context.set_trailing_metadata((("x-trailer", "unary-done"),))
    return request


def server_stream(request, context):
    count = int(request.decode() or "5")
    for i in range(count):
        yield f"item-{i}".encode()


def client_stream(request_iterator, context):
    total = sum(len(chunk) for chunk in request_iterator)
    return str(total).encode()


def bidi(request_iterator, context):
    for message in request_iterator:
        yield b"echo:" + message


def fail(request, context):
    # A trailers-only response: no message, status and details in the headers frame.
    context.set_trailing_metadata((("x-reason", "requested"),))
    context.abort(grpc.StatusCode.FAILED_PRECONDITION, "failure requested by the test")


def slow(request, context):
    time.sleep(0.3)
    return request


def serve():
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary, identity, identity),
            "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream, identity, identity),
            "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream, identity, identity),
            "Bidi": grpc.stream_stream_rpc_method_handler(bidi, identity, identity),
            "Fail": grpc.unary_unary_rpc_method_handler(fail, identity, identity),
            "Slow": grpc.unary_unary_rpc_method_handler(slow, identity, identity),
        },
    )
    options = [
        ("grpc.max_receive_message_length", 16 * 1024 * 1024),
        ("grpc.max_send_message_length", 16 * 1024 * 1024),
        ("grpc.max_concurrent_streams", 1000),
    ]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64), options=options)
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"listening {port}", flush=True)
    server.wait_for_termination()


def check(name, condition, detail=""):
    status = "ok" if condition else "FAILED"
    print(f"{status}: {name} {detail}".rstrip(), flush=True)
    if not condition:
        check.failed += 1


check.failed = 0


def client(target, ca_file=None, sni=None):
    options = [
        ("grpc.max_receive_message_length", 16 * 1024 * 1024),
        ("grpc.max_send_message_length", 16 * 1024 * 1024),
    ]
    if ca_file:
        with open(ca_file, "rb") as f:
            credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
        if sni:
            options.append(("grpc.ssl_target_name_override", sni))
        channel = grpc.secure_channel(target, credentials, options=options)
    else:
        channel = grpc.insecure_channel(target, options=options)
    grpc.channel_ready_future(channel).result(timeout=10)

    def method(kind, name):
        factory = getattr(channel, kind)
        return factory(f"/{SERVICE}/{name}", request_serializer=identity, response_deserializer=identity)

    unary_call = method("unary_unary", "Unary")
    response, call = unary_call.with_call(b"hello", timeout=10)
    trailers = dict(call.trailing_metadata())
    check("unary", response == b"hello", repr(response))
    check("unary trailers", trailers.get("x-trailer") == "unary-done", repr(trailers))
    check("unary status", call.code() == grpc.StatusCode.OK)

    items = [m.decode() for m in method("unary_stream", "ServerStream")(b"7", timeout=10)]
    check("server streaming", items == [f"item-{i}" for i in range(7)], repr(items))

    chunks = [b"x" * 1000 for _ in range(20)]
    total = method("stream_unary", "ClientStream")(iter(chunks), timeout=10)
    check("client streaming", total == b"20000", repr(total))

    # Full duplex: each reply must arrive before the next request is sent.
    outgoing = []
    condition = threading.Condition()
    replies = []

    def requests():
        for i in range(5):
            with condition:
                outgoing.append(i)
            yield f"m{i}".encode()
            with condition:
                if not condition.wait_for(lambda: len(replies) > i, timeout=5):
                    return

    for reply in method("stream_stream", "Bidi")(requests(), timeout=10):
        with condition:
            replies.append(reply.decode())
            condition.notify_all()
    check("bidi full duplex", replies == [f"echo:m{i}" for i in range(5)], repr(replies))

    try:
        method("unary_unary", "Fail")(b"", timeout=10)
        check("non-OK status", False, "call succeeded")
    except grpc.RpcError as error:
        check("non-OK status", error.code() == grpc.StatusCode.FAILED_PRECONDITION, str(error.code()))
        check("status details", error.details() == "failure requested by the test", repr(error.details()))
        check("trailers-only metadata", dict(error.trailing_metadata()).get("x-reason") == "requested")

    big = bytes(range(256)) * (4 * 1024 * 1024 // 256)
    echoed = unary_call(big, timeout=30)
    check("4 MiB message", echoed == big, f"{len(echoed)} bytes")

    slow_call = method("unary_unary", "Slow")
    with futures.ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(lambda i: slow_call(f"c{i}".encode(), timeout=20), range(50)))
    check("50 concurrent calls", results == [f"c{i}".encode() for i in range(50)])
    channel.close()
    return 1 if check.failed else 0


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve")
    c = sub.add_parser("client")
    c.add_argument("target")
    c.add_argument("--tls", dest="ca_file")
    c.add_argument("--sni")
    args = parser.parse_args()
    if args.command == "serve":
        serve()
        return 0
    return client(args.target, args.ca_file, args.sni)


if __name__ == "__main__":
    sys.exit(main())
