#!/usr/bin/env python3
"""An OpenOffload client written the way the reference Python clients are (grpcio,
generated stubs, the server certificate file as the root of trust, localhost), run
against offloadd by control/tests/python_clients.rs.

usage: openoffload_client.py --port N --root server.crt --api v1|v2 --stubs DIR

It exits 0 when every check passed and prints what failed otherwise.
"""
import argparse
import socket
import struct
import sys


def ip4(s):
    # The reference clients send inet_pton's octets read as a native (little-endian) u32.
    return struct.unpack("<I", socket.inet_pton(socket.AF_INET, s))[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--api", choices=["v1", "v2"], required=True)
    ap.add_argument("--stubs", required=True)
    a = ap.parse_args()
    sys.path.insert(0, a.stubs)
    import grpc

    if a.api == "v1":
        import openoffload_v1_pb2 as pb
        import openoffload_v1_pb2_grpc as pbg
        # v1 names: lowerCamel messages and camelCase fields.
        F = dict(sid="sessionId", inl="inLif", outl="outLif", ipv="ipVersion", sip="sourceIp",
                 sip6="sourceIpv6", sport="sourcePort", dip="destinationIp", dip6="destinationIpv6",
                 dport="destinationPort", proto="protocolId", act="action", tmo="cacheTimeout",
                 atype="actionType", rs="requestStatus", es="errorStatus", re="responseError",
                 info="sessionInfo", nk="nextkey", ps="pageSize", st="sessionState",
                 cc="sessionCloseCode", ss="startSession")
        Req, Act, Sid, Args = pb.sessionRequest, pb.actionParameters, pb.sessionId, pb.sessionRequestArgs
        stub = None
        add, get, delete, all_, closed = "addSession", "getSession", "deleteSession", "getAllSessions", "getClosedSessions"
    else:
        import openoffload_v2_pb2 as pb
        import openoffload_v2_pb2_grpc as pbg
        F = dict(sid="session_id", inl="in_lif", outl="out_lif", ipv="ip_version", sip="source_ip",
                 sip6="source_ipv6", sport="source_port", dip="destination_ip", dip6="destination_ipv6",
                 dport="destination_port", proto="protocol_id", act="action", tmo="cache_timeout",
                 atype="action_type", rs="request_status", es="error_status", re="response_error",
                 info="session_info", nk="next_key", ps="page_size", st="session_state",
                 cc="session_close_code", ss="start_session")
        Req, Act, Sid, Args = pb.SessionRequest, pb.ActionParameters, pb.SessionId, pb.SessionRequestArgs
        add, get, delete, all_, closed = "AddSession", "GetSession", "DeleteSession", "GetAllSessions", "GetClosedSessions"

    creds = grpc.ssl_channel_credentials(root_certificates=open(a.root, "rb").read())
    channel = grpc.secure_channel("localhost:%d" % a.port, creds)
    stub = pbg.SessionTableStub(channel)
    failures = []

    def check(ok, what):
        if not ok:
            failures.append(what)

    def req(sid, src, sport, tmo=0):
        kw = {F["sid"]: sid, F["inl"]: 1, F["outl"]: 2, F["ipv"]: 0, F["sip"]: ip4(src),
              F["sport"]: sport, F["dip"]: ip4("12.2.3.4"), F["dport"]: 80, F["proto"]: 6,
              F["act"]: Act(**{F["atype"]: 1}), F["tmo"]: tmo}
        return Req(**kw)

    def req6(sid):
        kw = {F["sid"]: sid, F["inl"]: 1, F["outl"]: 2, F["ipv"]: 1,
              F["sip6"]: socket.inet_pton(socket.AF_INET6, "2001:db8::1"), F["sport"]: 4430,
              F["dip6"]: socket.inet_pton(socket.AF_INET6, "2001:db8::2"), F["dport"]: 443,
              F["proto"]: 17, F["act"]: Act(**{F["atype"]: 2})}
        return Req(**kw)

    # The first call includes the TLS handshake; the C++ client allows it 100 ms.
    r = getattr(stub, add)(iter([req(1001, "10.0.0.1", 4430), req6(1002)]), timeout=0.1)
    check(getattr(r, F["rs"]) == 0 and getattr(r, F["es"]) == 0, "add two: %r" % r)
    # The C++ test batch: one 7-tuple under many ids.
    batch = [req(2000 + i, "10.0.0.9", 999) for i in range(64)]
    r = getattr(stub, add)(iter(batch), timeout=0.5)
    check(getattr(r, F["rs"]) == 4, "batch status: %r" % getattr(r, F["rs"]))
    check(getattr(r, F["es"]) == (2**64 - 2), "batch bits: %x" % getattr(r, F["es"]))
    check(len(getattr(r, F["re"])) == 63, "batch errors")

    s = getattr(stub, get)(Sid(**{F["sid"]: 1001}), timeout=0.1)
    check(getattr(s, F["sid"]) == 1001 and getattr(s, F["rs"]) == 0 and getattr(s, F["st"]) == 0, "get: %r" % s)
    # The Python delete test: an unknown id is status OK with _REJECTED_SESSION_NONEXISTENT.
    s = getattr(stub, delete)(Sid(**{F["sid"]: 424242}), timeout=0.1)
    check(getattr(s, F["rs"]) == 2, "delete unknown: %r" % s)
    s = getattr(stub, delete)(Sid(**{F["sid"]: 1002}), timeout=0.1)
    check(getattr(s, F["rs"]) == 0 and getattr(s, F["st"]) == 3, "delete: %r" % s)

    # Page-number paging (Python clients), then cursor paging from 4294967295 (C++).
    seen = []
    page = 1
    while True:
        r = getattr(stub, all_)(Args(**{F["ps"]: 10, "page": page}), timeout=0.5)
        ids = [getattr(x, F["sid"]) for x in getattr(r, F["info"])]
        if not ids:
            break
        seen += ids
        page += 1
    check(seen == [1001, 2000], "page paging: %r" % seen)
    cursor, seen = 4294967295, []
    while True:
        r = getattr(stub, all_)(Args(**{F["ps"]: 1, "page": 0, F["ss"]: cursor}), timeout=0.1)
        ids = [getattr(x, F["sid"]) for x in getattr(r, F["info"])]
        if not ids:
            break
        seen += ids
        cursor = getattr(r, F["nk"])
        for i in ids:
            getattr(stub, delete)(Sid(**{F["sid"]: i}), timeout=0.1)
    check(seen == [1001, 2000], "cursor paging: %r" % seen)

    # An empty closed table ends the stream at once, status OK.
    got = list(getattr(stub, closed)(Args(**{F["ps"]: 0}), timeout=0.5))
    check(got == [], "closed: %r" % got)
    # A session that times out comes back once, closed by _TIMEOUT.
    r = getattr(stub, add)(iter([req(3001, "10.0.0.3", 3001, tmo=1)]), timeout=0.5)
    check(getattr(r, F["rs"]) == 0, "add timeout session")
    import time
    deadline = time.time() + 10
    got = []
    while not got and time.time() < deadline:
        time.sleep(0.2)
        got = list(getattr(stub, closed)(Args(**{F["ps"]: 0}), timeout=1))
    check([(getattr(x, F["sid"]), getattr(x, F["cc"]), getattr(x, F["st"])) for x in got] == [(3001, 3, 3)],
          "closed by timeout: %r" % got)
    check(list(getattr(stub, closed)(Args(), timeout=0.5)) == [], "delivered once")

    if failures:
        for f in failures:
            print("FAIL:", f)
        return 1
    print("ok: %s client passed" % a.api)
    return 0


if __name__ == "__main__":
    sys.exit(main())
