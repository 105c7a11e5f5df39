//! QUIC (quinn) with TLS 1.3. The server presents certificates from files, or
//! a self-signed certificate it creates at first start and keeps; the client
//! verifies against a CA file, or pins the server certificate by its SHA-256
//! fingerprint. One bidirectional stream carries a session's frames in order.

use super::{ClientStream, ServerUrl};
use crate::error::ProtoError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};
use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// ALPN protocol id of gpupool sessions.
pub const ALPN: &[u8] = b"gpupool/1";

/// Stream and connection windows large enough for bulk copies at tens of
/// Gbit/s over sub-millisecond round trips.
const STREAM_WINDOW: u32 = 32 << 20;
const CONNECTION_WINDOW: u32 = 64 << 20;

fn transport_config() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.stream_receive_window(quinn::VarInt::from_u32(STREAM_WINDOW));
    t.receive_window(quinn::VarInt::from_u32(CONNECTION_WINDOW));
    t.send_window(CONNECTION_WINDOW as u64);
    t.keep_alive_interval(Some(Duration::from_secs(5)));
    t.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(30_000))));
    t
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Lower-case hex SHA-256 of a DER certificate.
pub fn cert_fingerprint(der: &[u8]) -> String {
    Sha256::digest(der).iter().map(|b| format!("{b:02x}")).collect()
}

/// How a client decides to trust a server certificate.
#[derive(Debug, Clone, Default)]
pub enum ClientTls {
    /// Pin by the URL's `fingerprint=`; without one the connection is refused.
    #[default]
    Pinned,
    /// Verify against the CA certificates in this PEM file (name checked).
    CaFile(PathBuf),
}

/// Verifies a server by the SHA-256 fingerprint of its leaf certificate.
#[derive(Debug)]
struct PinnedVerifier {
    fingerprint: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let seen = cert_fingerprint(end_entity.as_ref());
        if seen == self.fingerprint {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "server certificate fingerprint {seen} does not match the pinned {}",
                self.fingerprint
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_err(e: impl std::fmt::Display) -> ProtoError {
    ProtoError::Tls(e.to_string())
}

fn client_config(url: &ServerUrl, tls: &ClientTls) -> Result<quinn::ClientConfig, ProtoError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?;
    let mut config = match tls {
        ClientTls::Pinned => {
            let fingerprint = url.fingerprint.clone().ok_or_else(|| {
                ProtoError::Tls(format!(
                    "{url} has no ?fingerprint= to pin and no CA file is configured; the server prints its fingerprint at start"
                ))
            })?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                    fingerprint,
                    provider: provider(),
                }))
                .with_no_client_auth()
        }
        ClientTls::CaFile(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| tls_err(format!("{}: {e}", path.display())))? {
                roots.add(cert.map_err(tls_err)?).map_err(tls_err)?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    config.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(config).map_err(tls_err)?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(Arc::new(transport_config()));
    Ok(client)
}

/// Blocking reader over a QUIC receive stream.
struct QuicReader {
    rt: tokio::runtime::Handle,
    recv: quinn::RecvStream,
}

impl Read for QuicReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.rt.block_on(self.recv.read(buf)) {
            Ok(Some(n)) => Ok(n),
            Ok(None) => Ok(0),
            Err(e) => Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, e)),
        }
    }
}

impl super::PollRead for QuicReader {
    fn read_now(&mut self, buf: &mut [u8]) -> std::io::Result<Option<usize>> {
        // One poll with a waker that does nothing: the read is cancel-safe,
        // so dropping it when it is not ready loses no data.
        let mut read = std::pin::pin!(self.recv.read(buf));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match read.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(Ok(Some(n))) => Ok(Some(n)),
            std::task::Poll::Ready(Ok(None)) => Ok(Some(0)),
            std::task::Poll::Ready(Err(e)) => Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, e)),
            std::task::Poll::Pending => Ok(None),
        }
    }
}

/// Blocking writer over a QUIC send stream.
struct QuicWriter {
    rt: tokio::runtime::Handle,
    send: quinn::SendStream,
}

impl Write for QuicWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.rt
            .block_on(self.send.write(buf))
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::BrokenPipe, e))
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.rt
            .block_on(self.send.write_all(buf))
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::BrokenPipe, e))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What must outlive a client's QUIC stream halves.
struct QuicKeep {
    _runtime: tokio::runtime::Runtime,
    _endpoint: quinn::Endpoint,
    _connection: quinn::Connection,
}

/// The name of a QUIC client's runtime thread (the shim finds it by this
/// name to pin it).
pub const QUIC_CLIENT_THREAD: &str = "gpupool-quic";

/// Connect over QUIC and open the session's stream (blocking). The runtime
/// that drives the connection runs on one thread of its own.
pub fn quic_client_connect(url: &ServerUrl, tls: &ClientTls) -> Result<ClientStream, ProtoError> {
    let peer = url.authority();
    let fail = |reason: String| ProtoError::Connect {
        peer: peer.clone(),
        reason,
    };
    let config = client_config(url, tls)?;
    let addr: SocketAddr = peer
        .to_socket_addrs()
        .map_err(|e| fail(e.to_string()))?
        .next()
        .ok_or_else(|| fail("no address".into()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(QUIC_CLIENT_THREAD)
        .enable_all()
        .build()?;
    let bind: SocketAddr = if addr.is_ipv6() {
        "[::]:0".parse().unwrap()
    } else {
        "0.0.0.0:0".parse().unwrap()
    };
    let server_name = url.host.clone();
    let (endpoint, connection, send, recv) = runtime.block_on(async {
        let mut endpoint = quinn::Endpoint::client(bind).map_err(|e| fail(e.to_string()))?;
        endpoint.set_default_client_config(config);
        let connecting = endpoint.connect(addr, &server_name).map_err(|e| fail(e.to_string()))?;
        let connection = tokio::time::timeout(Duration::from_secs(10), connecting)
            .await
            .map_err(|_| fail("timed out".into()))?
            .map_err(|e| fail(e.to_string()))?;
        let (send, recv) = connection.open_bi().await.map_err(|e| fail(e.to_string()))?;
        Ok::<_, ProtoError>((endpoint, connection, send, recv))
    })?;
    let rt = runtime.handle().clone();
    let closer = connection.clone();
    let draining = endpoint.clone();
    let close_rt = rt.clone();
    Ok(ClientStream {
        reader: Box::new(QuicReader { rt: rt.clone(), recv }),
        writer: Box::new(QuicWriter { rt, send }),
        keep: Some(Box::new(QuicKeep {
            _runtime: runtime,
            _endpoint: endpoint,
            _connection: connection,
        })),
        // Tell the server at once (it frees the session then, not after an
        // idle timeout) and give the close a moment to leave.
        close: Box::new(move || {
            closer.close(0u32.into(), b"client ended the session");
            // Waited for on a thread of its own: this runs at process exit
            // too, when the calling thread's locals may be gone already.
            let (rt, endpoint) = (close_rt.clone(), draining.clone());
            let waiter = std::thread::spawn(move || {
                rt.block_on(async {
                    let _ = tokio::time::timeout(Duration::from_millis(100), endpoint.wait_idle()).await;
                })
            });
            let _ = waiter.join();
        }),
        peer: url.to_string(),
    })
}

/// A server's certificate chain and key, with the leaf's fingerprint.
pub struct ServerIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub fingerprint: String,
    /// True when gpupool generated the certificate (clients pin it).
    pub self_signed: bool,
}

/// Load `cert`/`key` PEM files when given; otherwise load the self-signed
/// identity kept in `state_dir`, creating it on first start.
pub fn load_or_create_server_identity(
    cert: Option<&Path>,
    key: Option<&Path>,
    state_dir: &Path,
) -> Result<ServerIdentity, ProtoError> {
    let (cert_path, key_path, self_signed) = match (cert, key) {
        (Some(c), Some(k)) => (c.to_path_buf(), k.to_path_buf(), false),
        (None, None) => {
            let c = state_dir.join("server-cert.pem");
            let k = state_dir.join("server-key.pem");
            if !c.exists() || !k.exists() {
                std::fs::create_dir_all(state_dir)
                    .map_err(|e| tls_err(format!("cannot create {}: {e}", state_dir.display())))?;
                let names = vec!["localhost".to_string(), "gpupool-server".to_string()];
                let generated = rcgen::generate_simple_self_signed(names).map_err(tls_err)?;
                write_private(&k, generated.key_pair.serialize_pem().as_bytes())?;
                std::fs::write(&c, generated.cert.pem())
                    .map_err(|e| tls_err(format!("cannot write {}: {e}", c.display())))?;
            }
            (c, k, true)
        }
        _ => {
            return Err(ProtoError::Tls(
                "a certificate file needs its key file, and the reverse".into(),
            ))
        }
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .map_err(|e| tls_err(format!("{}: {e}", cert_path.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| tls_err(format!("{}: {e}", cert_path.display())))?;
    let leaf = chain
        .first()
        .ok_or_else(|| tls_err(format!("{} holds no certificate", cert_path.display())))?;
    let fingerprint = cert_fingerprint(leaf.as_ref());
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| tls_err(format!("{}: {e}", key_path.display())))?;
    Ok(ServerIdentity {
        chain,
        key,
        fingerprint,
        self_signed,
    })
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), ProtoError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| tls_err(format!("cannot write {}: {e}", path.display())))?;
    f.write_all(bytes)
        .map_err(|e| tls_err(format!("cannot write {}: {e}", path.display())))
}

/// A QUIC server endpoint on `addr` (must be called inside a tokio runtime).
pub fn quic_server_endpoint(identity: &ServerIdentity, addr: SocketAddr) -> Result<quinn::Endpoint, ProtoError> {
    Ok(quinn::Endpoint::server(quic_server_config(identity)?, addr)?)
}

/// The server side's QUIC configuration: this identity, TLS 1.3, gpupool's
/// ALPN and transport windows.
pub(crate) fn quic_server_config(identity: &ServerIdentity) -> Result<quinn::ServerConfig, ProtoError> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_no_client_auth()
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(tls_err)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(tls_err)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport_config()));
    Ok(config)
}
