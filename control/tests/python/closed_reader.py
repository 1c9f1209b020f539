#!/usr/bin/env python3
"""A grpcio GetClosedSessions reader (v2, following: the stream does not end when the
feed is empty) that writes each session id it receives to stdout, one per line, at
once. control/tests/closed_delivery.rs SIGKILLs it mid-stream and counts the lines.

usage: closed_reader.py --port N --root server.crt --stubs DIR
"""
import argparse
import os
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--stubs", required=True)
    ap.add_argument("--option", action="append", default=[],
                    help="a channel option NAME=INT, e.g. grpc.http2.bdp_probe=0")
    a = ap.parse_args()
    sys.path.insert(0, a.stubs)
    import grpc
    import openoffload_v2_pb2 as pb
    import openoffload_v2_pb2_grpc as pbg

    creds = grpc.ssl_channel_credentials(root_certificates=open(a.root, "rb").read())
    options = [(k, int(v)) for k, v in (o.split("=", 1) for o in a.option)]
    channel = grpc.secure_channel("localhost:%d" % a.port, creds, options=options)
    stub = pbg.SessionTableStub(channel)
    out = sys.stdout.fileno()
    for r in stub.GetClosedSessions(pb.SessionRequestArgs(page_size=0),
                                    metadata=[("offloadd-follow", "1")]):
        # One write per record: what the process has is on the pipe before the next.
        os.write(out, b"%d\n" % r.session_id)


if __name__ == "__main__":
    main()
