#!/usr/bin/env python3
"""A short, realistic redis-py session against a Redis-protocol server.

Usage: python_client.py HOST PORT

Exits 0 when every check passes; a failed check raises (non-zero exit, traceback on
stderr). Keys live under a per-run prefix, so the script does not touch other data and can
run against any server (tests/differential.rs runs it against real Redis and tessera).
"""

import os
import sys

import redis


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: python_client.py HOST PORT")
    host, port = sys.argv[1], int(sys.argv[2])
    r = redis.Redis(
        host=host,
        port=port,
        decode_responses=True,
        socket_timeout=10,
        socket_connect_timeout=10,
    )
    p = f"pyclient:{os.getpid()}:"

    assert r.ping() is True

    # set / get
    assert r.set(p + "greeting", "hello") is True
    assert r.get(p + "greeting") == "hello"
    assert r.get(p + "missing") is None
    assert r.set(p + "greeting", "again", nx=True) is None
    assert r.set(p + "greeting", "hi", xx=True, get=True) == "hello"
    assert r.get(p + "greeting") == "hi"

    # mset / mget, keys on several cores and behind one hash tag
    pairs = {f"{p}m{i}": str(i) for i in range(10)}
    pairs.update({f"{p}{{tag}}{i}": f"v{i}" for i in range(3)})
    assert r.mset(pairs) is True
    names = list(pairs)
    assert r.mget(names + [p + "missing"]) == list(pairs.values()) + [None]
    assert r.exists(*names) == len(names)

    # incr family
    assert r.incr(p + "counter") == 1
    assert r.incrby(p + "counter", 41) == 42
    assert r.decr(p + "counter") == 41
    assert r.incrbyfloat(p + "float", 2.5) == 2.5
    try:
        r.incr(p + "greeting")
        raise AssertionError("INCR on a non-number succeeded")
    except redis.ResponseError as e:
        assert "not an integer" in str(e), e

    # a transaction through a pipeline
    pipe = r.pipeline(transaction=True)
    pipe.set(p + "tx", "1")
    pipe.incr(p + "tx")
    pipe.get(p + "tx")
    pipe.mget([p + "m1", p + "m2"])
    assert pipe.execute() == [True, 2, "2", ["1", "2"]]

    # a plain (non-transactional) pipeline
    pipe = r.pipeline(transaction=False)
    for i in range(50):
        pipe.set(f"{p}pipe{i}", i)
    for i in range(50):
        pipe.get(f"{p}pipe{i}")
    got = pipe.execute()
    assert got[:50] == [True] * 50
    assert got[50:] == [str(i) for i in range(50)]

    # expire / ttl
    assert r.ttl(p + "greeting") == -1
    assert r.ttl(p + "missing") == -2
    assert r.expire(p + "greeting", 100) is True
    assert 0 < r.ttl(p + "greeting") <= 100
    assert 0 < r.pttl(p + "greeting") <= 100_000
    assert r.persist(p + "greeting") is True
    assert r.ttl(p + "greeting") == -1
    assert r.set(p + "short", "x", ex=1000) is True
    assert 990 < r.ttl(p + "short") <= 1000

    # scan_iter sees every key once, whichever core holds it
    expected = set(names) | {p + k for k in ("greeting", "counter", "float", "tx", "short")}
    expected |= {f"{p}pipe{i}" for i in range(50)}
    seen = set(r.scan_iter(match=p + "*", count=7))
    assert seen == expected, sorted(seen ^ expected)

    # delete what we made
    assert r.delete(*expected) == len(expected)
    assert set(r.scan_iter(match=p + "*")) == set()

    # client name
    assert r.client_setname("py-client") is True
    assert r.client_getname() == "py-client"

    # info
    info = r.info()
    assert "redis_version" in info, sorted(info)
    assert int(info["connected_clients"]) >= 1
    server = r.info("server")
    assert "redis_version" in server
    assert "db0" not in r.info("keyspace") or isinstance(r.info("keyspace")["db0"], dict)

    r.close()
    print(f"python_client.py: redis-py {redis.__version__} session against {host}:{port} passed")


if __name__ == "__main__":
    main()
