//! TLS for clients (rustls, ring): a `tls-port` beside the plaintext port on every data
//! core. The server configuration is built from `tls-cert-file`, `tls-key-file`,
//! `tls-ca-cert-file`, `tls-auth-clients` and `tls-protocols` at start and again on each
//! CONFIG SET of one of them (certificates reload without a restart; connections already
//! open keep theirs). A handshake that does not finish in `limits::TLS_HANDSHAKE_MS` is
//! dropped.

use crate::config::{Config, TlsAuthClients};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::sync::Arc;

/// The parameters whose CONFIG SET rebuilds the TLS configuration.
pub const PARAMS: &[&str] = &[
    "tls-cert-file",
    "tls-key-file",
    "tls-ca-cert-file",
    "tls-auth-clients",
    "tls-protocols",
];

fn read_pem(path: &str, what: &str) -> Result<Vec<u8>, String> {
    if path.is_empty() {
        return Err(format!("{what} is not set"));
    }
    std::fs::read(path).map_err(|e| format!("cannot read {what} {path}: {e}"))
}

/// The rustls server configuration the settings describe, or why there is none.
pub fn server_config(cfg: &Config) -> Result<Arc<ServerConfig>, String> {
    let pem = read_pem(&cfg.tls_cert_file, "tls-cert-file")?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls-cert-file {}: {e}", cfg.tls_cert_file))?;
    if certs.is_empty() {
        return Err(format!(
            "tls-cert-file {} holds no certificate",
            cfg.tls_cert_file
        ));
    }
    let pem = read_pem(&cfg.tls_key_file, "tls-key-file")?;
    let key = rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| format!("tls-key-file {}: {e}", cfg.tls_key_file))?
        .ok_or_else(|| format!("tls-key-file {} holds no private key", cfg.tls_key_file))?;
    let mut versions = Vec::new();
    for p in cfg.tls_protocols.split_whitespace() {
        if p.eq_ignore_ascii_case("TLSv1.2") {
            versions.push(&rustls::version::TLS12);
        } else if p.eq_ignore_ascii_case("TLSv1.3") {
            versions.push(&rustls::version::TLS13);
        }
    }
    if versions.is_empty() {
        versions = vec![&rustls::version::TLS12, &rustls::version::TLS13];
    }
    let builder = ServerConfig::builder_with_protocol_versions(&versions);
    let builder = match cfg.tls_auth_clients {
        TlsAuthClients::No => builder.with_no_client_auth(),
        auth => {
            let pem = read_pem(&cfg.tls_ca_cert_file, "tls-ca-cert-file")
                .map_err(|e| format!("{e} (tls-auth-clients {} needs it)", auth.name()))?;
            let mut roots = RootCertStore::empty();
            for ca in rustls_pemfile::certs(&mut pem.as_slice()) {
                let ca = ca.map_err(|e| format!("tls-ca-cert-file: {e}"))?;
                roots
                    .add(ca)
                    .map_err(|e| format!("tls-ca-cert-file: {e}"))?;
            }
            let verifier = WebPkiClientVerifier::builder(Arc::new(roots));
            let verifier = if auth == TlsAuthClients::Optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| format!("tls-ca-cert-file: {e}"))?,
            )
        }
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("the certificate and key do not make a server: {e}"))?;
    Ok(Arc::new(config))
}
