#!/usr/bin/env python3
"""An OpenOffload client written the way the reference Python clients are (grpcio,
generated stubs, the server certificate file as the root of trust, localhost), run
against offloadd by control/tests/python_clients.rs.

usage: openoffload_client.py --port N --root server.crt --api v1|v2 --stubs DIR [--skip-closed]

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
    # For a device whose traffic simulator closes sessions on its own (demo.toml).
    ap.add_argument("--skip-closed", action="store_true")
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
                 cc="sessionCloseCode", ss="startSession", nh="actionNextHop",
                 nh6="actionNextHopV6")
        Req, Act, Sid, Args = pb.sessionRequest, pb.actionParameters, pb.sessionId, pb.sessionRequestArgs
        AddStatus = pb.ADD_SESSION_STATUS
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
                 cc="session_close_code", ss="start_session", nh="action_next_hop",
                 nh6="action_next_hop_v6")
        Req, Act, Sid, Args = pb.SessionRequest, pb.ActionParameters, pb.SessionId, pb.SessionRequestArgs
        AddStatus = pb.AddSessionStatus
        add, get, delete, all_, closed = "AddSession", "GetSession", "DeleteSession", "GetAllSessions", "GetClosedSessions"

    creds = grpc.ssl_channel_credentials(root_certificates=open(a.root, "rb").read())
    channel = grpc.secure_channel("localhost:%d" % a.port, creds)
    stub = pbg.SessionTableStub(channel)
    failures = []

    def check(ok, what):
        if not ok:
            failures.append(what)

    # The Python clients' next hop on every session; the C++ client's two.
    PY_NH, CPP_NH = ip4("12.2.3.4"), ip4("192.168.0.1")
    CPP_NH6 = socket.inet_pton(socket.AF_INET6, "1::ffff:204:160")

    def req(sid, src, sport, tmo=0, nh=PY_NH):
        kw = {F["sid"]: sid, F["inl"]: 1, F["outl"]: 2, F["ipv"]: 0, F["sip"]: ip4(src),
              F["sport"]: sport, F["dip"]: ip4("10.1.0.2"), F["dport"]: 80, F["proto"]: 6,
              F["act"]: Act(**{F["atype"]: 1, F["nh"]: nh}), F["tmo"]: tmo}
        return Req(**kw)

    def req6(sid, nh6=b"", nh=PY_NH):
        kw = {F["sid"]: sid, F["inl"]: 1, F["outl"]: 2, F["ipv"]: 1,
              F["sip6"]: socket.inet_pton(socket.AF_INET6, "2001:db8::%x" % sid), F["sport"]: 4430,
              F["dip6"]: socket.inet_pton(socket.AF_INET6, "2001:db8::ffff"), F["dport"]: 443,
              F["proto"]: 17, F["act"]: Act(**{F["atype"]: 1, F["nh"]: nh, F["nh6"]: nh6})}
        return Req(**kw)

    def status_names(r):
        # As the Python clients decode response_error: AddSessionStatus numbers.
        return [(getattr(e, F["sid"]), AddStatus.Name(getattr(e, F["es"]))) for e in getattr(r, F["re"])]

    # Python: ids from 1, next hop 12.2.3.4 (IPv4 and IPv6 sessions alike). The first
    # call includes the TLS handshake; the C++ client allows it 100 ms.
    r = getattr(stub, add)(iter([req(1, "10.0.0.1", 4430), req6(2)]), timeout=0.1)
    check(getattr(r, F["rs"]) == 0 and getattr(r, F["es"]) == 0, "add python sessions: %r" % r)
    # C++: ids from 0, next hops 192.168.0.1 and 1::ffff:204:160.
    r = getattr(stub, add)(iter([req(0, "10.0.0.2", 4431, nh=CPP_NH), req6(3, nh6=CPP_NH6, nh=0)]),
                           timeout=0.1)
    check(getattr(r, F["rs"]) == 0 and getattr(r, F["es"]) == 0, "add C++ sessions: %r" % r)
    # The C++ test batch: one 7-tuple under 64 ids; the first accepted, the others
    # already exist; the call is OK. The reasons come in the trailers, which the real
    # clients ignore.
    batch = [req(100 + i, "10.0.0.9", 999, nh=CPP_NH) for i in range(64)]
    r, call = getattr(stub, add).with_call(iter(batch), timeout=0.5)
    check(call.code() == grpc.StatusCode.OK, "batch call status %r" % call.code())
    check(getattr(r, F["rs"]) == AddStatus.Value("_SESSION_ALREADY_EXISTS"),
          "batch status: %r" % getattr(r, F["rs"]))
    check(getattr(r, F["es"]) == (2**64 - 2), "batch bits: %x" % getattr(r, F["es"]))
    check(status_names(r) == [(100 + i, "_SESSION_ALREADY_EXISTS") for i in range(1, 64)],
          "batch errors: %r" % status_names(r))
    told = [v for k, v in call.trailing_metadata() if k == "offload-rejection"]
    check(len(told) > 0 and told[0] == "101 tuple_exists 7-tuple already offloaded as session 100",
          "batch trailers: %r" % told[:2])

    s = getattr(stub, get)(Sid(**{F["sid"]: 1}), timeout=0.1)
    check(getattr(s, F["sid"]) == 1 and getattr(s, F["rs"]) == 0 and getattr(s, F["st"]) == 0, "get: %r" % s)
    # The Python delete test: an unknown id is status OK with _REJECTED_SESSION_NONEXISTENT.
    s = getattr(stub, delete)(Sid(**{F["sid"]: 424242}), timeout=0.1)
    check(getattr(s, F["rs"]) == 2, "delete unknown: %r" % s)
    s = getattr(stub, delete)(Sid(**{F["sid"]: 2}), timeout=0.1)
    check(getattr(s, F["rs"]) == 0 and getattr(s, F["st"]) == 3, "delete: %r" % s)

    held = [0, 1, 3, 100]
    # Page-number paging (Python clients).
    seen = []
    page = 1
    while True:
        r = getattr(stub, all_)(Args(**{F["ps"]: 3, "page": page}), timeout=0.5)
        ids = [getattr(x, F["sid"]) for x in getattr(r, F["info"])]
        if not ids:
            break
        seen += ids
        page += 1
    check(seen == held, "page paging: %r" % seen)
    # The C++ loop: from 4294967295, page 0, the last id seen as the next cursor
    # (not next_key), until an empty page; once listing, once clearing the table.
    for clear in (False, True):
        cursor, seen = 4294967295, []
        while len(seen) <= 10 * len(held):
            r = getattr(stub, all_)(Args(**{F["ps"]: 1, "page": 0, F["ss"]: cursor}), timeout=0.1)
            ids = [getattr(x, F["sid"]) for x in getattr(r, F["info"])]
            if not ids:
                break
            seen += ids
            cursor = ids[-1]
            for i in ids if clear else []:
                getattr(stub, delete)(Sid(**{F["sid"]: i}), timeout=0.1)
        check(seen == held, "cursor paging (clear=%s): %r" % (clear, seen))

    if a.skip_closed:
        return report(failures, a.api)
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

    return report(failures, a.api)


def report(failures, api):
    if failures:
        for f in failures:
            print("FAIL:", f)
        return 1
    print("ok: %s client passed" % api)
    return 0


if __name__ == "__main__":
    sys.exit(main())
