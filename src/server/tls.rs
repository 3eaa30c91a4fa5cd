//! TLS (rustls, ring): a `tls-port` beside the plaintext port on every data core, and the
//! node's own links to its peers when `tls-cluster` (the cluster bus and forwarded
//! commands) or `tls-replication` (the link to its primary) say so.
//!
//! The server configuration is built from `tls-cert-file`, `tls-key-file`,
//! `tls-ca-cert-file`, `tls-auth-clients` and `tls-protocols`; the client configuration
//! for peer links from `tls-ca-cert-file`, `tls-client-cert-file` and `tls-client-key-file`
//! (the server's pair when unset) and `tls-protocols`. Both are built at start and again on
//! each CONFIG SET of one of them (certificates reload without a restart; connections
//! already open keep theirs). A handshake that does not finish in `limits::TLS_HANDSHAKE_MS`
//! is dropped.
//!
//! A peer's certificate must chain to `tls-ca-cert-file`; its names are not matched against
//! the address dialled, as Redis does not: nodes are found by address, and one certificate
//! for the whole cluster is the common deployment.

use crate::config::{Config, TlsAuthClients};
use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// The parameters whose CONFIG SET rebuilds the TLS configurations.
pub const PARAMS: &[&str] = &[
    "tls-cert-file",
    "tls-key-file",
    "tls-ca-cert-file",
    "tls-auth-clients",
    "tls-protocols",
    "tls-client-cert-file",
    "tls-client-key-file",
    "tls-replication",
];

fn read_pem(path: &str, what: &str) -> Result<Vec<u8>, String> {
    if path.is_empty() {
        return Err(format!("{what} is not set"));
    }
    std::fs::read(path).map_err(|e| format!("cannot read {what} {path}: {e}"))
}

/// A certificate chain and its key, from the files named by the `cert` and `key`
/// parameters.
fn cert_and_key(
    (cert, cert_path): (&str, &str),
    (key, key_path): (&str, &str),
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let pem = read_pem(cert_path, cert)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{cert} {cert_path}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{cert} {cert_path} holds no certificate"));
    }
    let pem = read_pem(key_path, key)?;
    let key = rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| format!("{key} {key_path}: {e}"))?
        .ok_or_else(|| format!("{key} {key_path} holds no private key"))?;
    Ok((certs, key))
}

/// The CA certificates in `tls-ca-cert-file`.
fn roots(cfg: &Config) -> Result<RootCertStore, String> {
    let pem = read_pem(&cfg.tls_ca_cert_file, "tls-ca-cert-file")?;
    let mut roots = RootCertStore::empty();
    for ca in rustls_pemfile::certs(&mut pem.as_slice()) {
        let ca = ca.map_err(|e| format!("tls-ca-cert-file: {e}"))?;
        roots
            .add(ca)
            .map_err(|e| format!("tls-ca-cert-file: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "tls-ca-cert-file {} holds no certificate",
            cfg.tls_ca_cert_file
        ));
    }
    Ok(roots)
}

/// The protocol versions `tls-protocols` allows (both when it is empty).
fn versions(cfg: &Config) -> Vec<&'static rustls::SupportedProtocolVersion> {
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
    versions
}

/// The rustls server configuration the settings describe, or why there is none.
pub fn server_config(cfg: &Config) -> Result<Arc<ServerConfig>, String> {
    let (certs, key) = cert_and_key(
        ("tls-cert-file", &cfg.tls_cert_file),
        ("tls-key-file", &cfg.tls_key_file),
    )?;
    let builder = ServerConfig::builder_with_protocol_versions(&versions(cfg));
    let builder = match cfg.tls_auth_clients {
        TlsAuthClients::No => builder.with_no_client_auth(),
        auth => {
            let roots = roots(cfg)
                .map_err(|e| format!("{e} (tls-auth-clients {} needs it)", auth.name()))?;
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

/// Whether this node dials any peer over TLS.
pub fn dials_tls(cfg: &Config) -> bool {
    cfg.tls_cluster || cfg.tls_replication
}

/// The rustls client configuration this node dials its peers with, or why there is none.
pub fn client_config(cfg: &Config) -> Result<Arc<ClientConfig>, String> {
    let roots = roots(cfg).map_err(|e| format!("{e} (peers' certificates are checked with it)"))?;
    let (cert, key) = if cfg.tls_client_cert_file.is_empty() {
        (
            ("tls-cert-file", cfg.tls_cert_file.as_str()),
            ("tls-key-file", cfg.tls_key_file.as_str()),
        )
    } else {
        (
            ("tls-client-cert-file", cfg.tls_client_cert_file.as_str()),
            ("tls-client-key-file", cfg.tls_client_key_file.as_str()),
        )
    };
    let (certs, key_der) = cert_and_key(cert, key)?;
    let webpki = WebPkiServerVerifier::builder(Arc::new(roots))
        .build()
        .map_err(|e| format!("tls-ca-cert-file: {e}"))?;
    let config = ClientConfig::builder_with_protocol_versions(&versions(cfg))
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ChainOnly(webpki)))
        .with_client_auth_cert(certs, key_der)
        .map_err(|e| format!("the {} and {} do not make a client: {e}", cert.0, key.0))?;
    Ok(Arc::new(config))
}

/// Checks a peer's certificate chain against the CA and its signatures, but not its names
/// against the address dialled (see the module's note).
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::CertificateError::{NotValidForName, NotValidForNameContext};
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                NotValidForName | NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// A link between two nodes: plain TCP, or TLS over it.
pub enum PeerStream {
    Plain(TcpStream),
    Tls(Box<futures_rustls::TlsStream<TcpStream>>),
}

impl PeerStream {
    /// Over `stream`, just connected to `peer`: TLS with `tls` (the handshake bounded by
    /// `limits::TLS_HANDSHAKE_MS`), else plain.
    pub async fn dial(
        stream: TcpStream,
        peer: std::net::IpAddr,
        tls: Option<Arc<ClientConfig>>,
    ) -> io::Result<PeerStream> {
        let Some(tls) = tls else {
            return Ok(PeerStream::Plain(stream));
        };
        let handshake = futures_rustls::TlsConnector::from(tls)
            .connect(ServerName::IpAddress(peer.into()), stream);
        match bounded(handshake).await? {
            Ok(s) => Ok(PeerStream::Tls(Box::new(s.into()))),
            Err(e) => Err(io::Error::other(format!("TLS handshake: {e}"))),
        }
    }

    /// Over `stream`, just accepted: TLS with `tls` (bounded as [`PeerStream::dial`]),
    /// else plain.
    pub async fn accept(
        stream: TcpStream,
        tls: Option<Arc<ServerConfig>>,
    ) -> io::Result<PeerStream> {
        let Some(tls) = tls else {
            return Ok(PeerStream::Plain(stream));
        };
        match bounded(futures_rustls::TlsAcceptor::from(tls).accept(stream)).await? {
            Ok(s) => Ok(PeerStream::Tls(Box::new(s.into()))),
            Err(e) => Err(io::Error::other(format!("TLS handshake: {e}"))),
        }
    }

    /// The TCP connection underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            PeerStream::Plain(s) => s,
            PeerStream::Tls(s) => s.get_ref().0,
        }
    }
}

/// Writes all of `bytes` and flushes them: TLS keeps what it encrypted until flushed (on a
/// plain TCP stream the flush costs nothing).
pub async fn write_flushed<S: AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8]) -> io::Result<()> {
    use futures_lite::AsyncWriteExt;
    stream.write_all(bytes).await?;
    stream.flush().await
}

/// `handshake`, or a timeout error after `limits::TLS_HANDSHAKE_MS`.
async fn bounded<T>(handshake: impl std::future::Future<Output = T>) -> io::Result<T> {
    let limit = Duration::from_millis(crate::limits::TLS_HANDSHAKE_MS);
    futures_lite::future::or(async { Ok(handshake.await) }, async {
        glommio::timer::sleep(limit).await;
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("TLS handshake not done in {} ms", limit.as_millis()),
        ))
    })
    .await
}

impl AsyncRead for PeerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            PeerStream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            PeerStream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_flush(cx),
            PeerStream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_close(cx),
            PeerStream::Tls(s) => Pin::new(&mut **s).poll_close(cx),
        }
    }
}
