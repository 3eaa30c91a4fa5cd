//! TLS on `tls-port`: the `redis` crate (rustls) connects with the test's own CA, with and
//! without client certificates as `tls-auth-clients` asks, certificates reload on CONFIG
//! SET, and a bad handshake harms nothing.

mod common;
use common::certs::{write, Ca};
use common::*;
use redis::{ClientTlsConfig, TlsCertificates};

/// A TLS client trusting `root`, with a client certificate if given; the result of a
/// SET and GET through it.
fn tls_roundtrip(
    port: u16,
    root: &str,
    client: Option<(&str, &str)>,
) -> redis::RedisResult<String> {
    let certs = TlsCertificates {
        client_tls: client.map(|(c, k)| ClientTlsConfig {
            client_cert: c.as_bytes().to_vec(),
            client_key: k.as_bytes().to_vec(),
        }),
        root_cert: Some(root.as_bytes().to_vec()),
    };
    let client = redis::Client::build_with_tls(format!("rediss://127.0.0.1:{port}/"), certs)?;
    let mut con = client.get_connection_with_timeout(REPLY_DEADLINE)?;
    redis::cmd("SET")
        .arg("over-tls")
        .arg("yes")
        .query::<()>(&mut con)?;
    redis::cmd("GET").arg("over-tls").query(&mut con)
}

#[test]
fn clients_connect_over_tls_with_and_without_certificates_and_certificates_reload() {
    let dir = scratch_dir("tls");
    let ca = Ca::new("tessera test CA");
    let (server_cert, server_key) = ca.sign(&["127.0.0.1", "localhost"], false);
    let (client_cert, client_key) = ca.sign(&["client"], true);
    let rogue = Ca::new("someone else");
    let (rogue_cert, rogue_key) = rogue.sign(&["client"], true);
    let cert = write(&dir, "server.crt", &server_cert);
    let key = write(&dir, "server.key", &server_key);
    let ca_file = write(&dir, "ca.crt", &ca.cert_pem);
    let tls_port = free_port();
    let s = Server::start(
        2,
        &[
            "--tls-port",
            &tls_port.to_string(),
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca_file,
            "--tls-auth-clients",
            "optional",
        ],
    );
    // Optional: with or without a certificate, never with one the CA did not sign.
    assert_eq!(tls_roundtrip(tls_port, &ca.cert_pem, None).unwrap(), "yes");
    assert_eq!(
        tls_roundtrip(tls_port, &ca.cert_pem, Some((&client_cert, &client_key))).unwrap(),
        "yes"
    );
    assert!(tls_roundtrip(tls_port, &ca.cert_pem, Some((&rogue_cert, &rogue_key))).is_err());
    // A client that does not trust the server's CA refuses it.
    assert!(tls_roundtrip(tls_port, &rogue.cert_pem, None).is_err());
    // The plaintext port serves the same data.
    let mut r = s.raw();
    assert_eq!(r.cmd(&["GET", "over-tls"]), Resp::bulk("yes"));

    // Required: only clients with a certificate of the CA get in.
    assert_eq!(
        r.cmd(&["CONFIG", "SET", "tls-auth-clients", "yes"]),
        Resp::ok()
    );
    assert!(tls_roundtrip(tls_port, &ca.cert_pem, None).is_err());
    assert_eq!(
        tls_roundtrip(tls_port, &ca.cert_pem, Some((&client_cert, &client_key))).unwrap(),
        "yes"
    );

    // A large value and a long pipeline go through whole.
    let certs = TlsCertificates {
        client_tls: Some(ClientTlsConfig {
            client_cert: client_cert.as_bytes().to_vec(),
            client_key: client_key.as_bytes().to_vec(),
        }),
        root_cert: Some(ca.cert_pem.as_bytes().to_vec()),
    };
    let client =
        redis::Client::build_with_tls(format!("rediss://127.0.0.1:{tls_port}/"), certs).unwrap();
    let mut con = client.get_connection_with_timeout(REPLY_DEADLINE).unwrap();
    let big = "v".repeat(3 << 20);
    redis::cmd("SET")
        .arg("big")
        .arg(&big)
        .query::<()>(&mut con)
        .unwrap();
    let got: String = redis::cmd("GET").arg("big").query(&mut con).unwrap();
    assert_eq!(got.len(), big.len());
    let mut pipe = redis::pipe();
    for i in 0..2000 {
        pipe.cmd("SET").arg(format!("p{i}")).arg(i).ignore();
    }
    pipe.cmd("DBSIZE");
    let (n,): (i64,) = pipe.query(&mut con).unwrap();
    assert_eq!(n, 2002);

    // Hot reload: a certificate from another CA is served to new connections at once;
    // connections already open keep working.
    let ca2 = Ca::new("second CA");
    let (cert2, key2) = ca2.sign(&["127.0.0.1"], false);
    let cert2_file = write(&dir, "server2.crt", &cert2);
    let key2_file = write(&dir, "server2.key", &key2);
    assert_eq!(
        r.cmd(&[
            "CONFIG",
            "SET",
            "tls-cert-file",
            &cert2_file,
            "tls-key-file",
            &key2_file
        ]),
        Resp::ok()
    );
    assert_eq!(
        tls_roundtrip(tls_port, &ca2.cert_pem, Some((&client_cert, &client_key))).unwrap(),
        "yes"
    );
    assert!(tls_roundtrip(tls_port, &ca.cert_pem, Some((&client_cert, &client_key))).is_err());
    let still: i64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
    assert_eq!(still, 2002);
    // A reload that cannot work changes nothing and says why.
    match r.cmd(&["CONFIG", "SET", "tls-cert-file", "/nonexistent/cert.pem"]) {
        Resp::Error(e) => assert!(
            e.starts_with("ERR CONFIG SET failed (possibly related to argument 'tls-cert-file') - Unable to update TLS configuration: cannot read tls-cert-file /nonexistent/cert.pem"),
            "{e}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        r.cmd(&["CONFIG", "GET", "tls-cert-file"]),
        Resp::Array(vec![Resp::bulk("tls-cert-file"), Resp::bulk(&cert2_file)])
    );
    assert_eq!(
        tls_roundtrip(tls_port, &ca2.cert_pem, Some((&client_cert, &client_key))).unwrap(),
        "yes"
    );
    assert!(matches!(
        r.cmd(&["CONFIG", "SET", "tls-protocols", "TLSv1.1"]),
        Resp::Error(e) if e.contains("TLSv1.2 and/or TLSv1.3")
    ));
    assert!(matches!(
        r.cmd(&["CONFIG", "SET", "tls-port", "7000"]),
        Resp::Error(e) if e.contains("can't set immutable config")
    ));

    // Not TLS at all on the TLS port: dropped, and the node goes on.
    let mut junk = Raw::connect(tls_port);
    junk.send(b"PING\r\n");
    assert!(junk.is_closed());
    assert_eq!(r.cmd(&["PING"]), Resp::Simple("PONG".into()));
}

#[test]
fn a_tls_port_without_usable_certificates_stops_the_start() {
    let text = refused_start(&[
        "--tls-port",
        &free_port().to_string(),
        "--tls-auth-clients",
        "no",
        "--tls-cert-file",
        "/nonexistent.crt",
        "--tls-key-file",
        "/nonexistent.key",
    ]);
    assert!(
        text.contains("TLS: cannot read tls-cert-file /nonexistent.crt"),
        "{text}"
    );
}

#[test]
fn node_to_node_tls_without_what_it_needs_stops_the_start() {
    // tls-cluster: peers forward to the TLS port, so there must be one.
    let text = refused_start(&["--tls-cluster", "yes"]);
    assert!(text.contains("tls-cluster yes needs a tls-port"), "{text}");
    // tls-replication: the primary's certificate is checked against the CA file.
    let text = refused_start(&["--tls-replication", "yes"]);
    assert!(
        text.contains("tls-ca-cert-file is not set (peers' certificates are checked with it)"),
        "{text}"
    );
}

#[test]
fn tls_replication_is_set_at_runtime_only_with_a_usable_ca() {
    let dir = scratch_dir("tls-repl-config");
    let ca = Ca::new("tessera test CA");
    let (cert, key) = ca.sign_node(&["127.0.0.1"]);
    let cert = write(&dir, "node.crt", &cert);
    let key = write(&dir, "node.key", &key);
    let ca_file = write(&dir, "ca.crt", &ca.cert_pem);
    let server = Server::start(1, &[]);
    let mut c = server.raw();
    // No CA yet: refused, and nothing changes.
    let refused = c.cmd(&["CONFIG", "SET", "tls-replication", "yes"]);
    assert!(
        matches!(&refused, Resp::Error(e) if e.starts_with("ERR CONFIG SET failed (possibly related to argument 'tls-replication') - Unable to update TLS configuration: tls-ca-cert-file is not set")),
        "{refused:?}"
    );
    assert_eq!(
        c.cmd(&["CONFIG", "GET", "tls-replication"]),
        Resp::Array(vec![Resp::bulk("tls-replication"), Resp::bulk("no")])
    );
    let set = c.cmd(&[
        "CONFIG",
        "SET",
        "tls-ca-cert-file",
        &ca_file,
        "tls-cert-file",
        &cert,
        "tls-key-file",
        &key,
        "tls-replication",
        "yes",
    ]);
    assert_eq!(set, Resp::ok());
    assert_eq!(
        c.cmd(&["CONFIG", "GET", "tls-replication"]),
        Resp::Array(vec![Resp::bulk("tls-replication"), Resp::bulk("yes")])
    );
    // tls-cluster is fixed at start, as in Redis.
    let fixed = c.cmd(&["CONFIG", "SET", "tls-cluster", "yes"]);
    assert!(
        matches!(&fixed, Resp::Error(e) if e.contains("can't set immutable config")),
        "{fixed:?}"
    );
}
