//! The systemd readiness protocol (`Type=notify`), spoken directly: it is one datagram on a
//! Unix socket, so neither libsystemd nor a crate is worth linking for it.
//!
//! systemd hands the socket's address over in `$NOTIFY_SOCKET`: a filesystem path, or a
//! Linux abstract-namespace name written with a leading `@`. Outside systemd the variable is
//! unset and every call is a no-op, so the gateway runs the same under a shell, a container
//! runtime or a test harness.
//!
//! `accepts` is the readiness probe: READY=1 is sent only once it succeeds.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;

/// Sends `state` (newline-separated `KEY=value` assignments such as `READY=1`) to the service
/// manager. `Ok(false)` means nobody asked for notifications (`$NOTIFY_SOCKET` unset or empty),
/// which is not an error: the gateway does not have to run under systemd.
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(socket) if !socket.is_empty() => send_to(&socket, state).map(|()| true),
        _ => Ok(false),
    }
}

/// `RELOADING=1` with the `MONOTONIC_USEC` systemd asks to accompany it, so `systemctl status`
/// shows the reload under way until the `READY=1` that ends it.
pub fn reloading() -> io::Result<bool> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let usec = ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000;
    notify(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"))
}

/// `notify` with the socket named by the caller: split out so the tests need not change the
/// process environment, which other test threads read concurrently.
pub fn send_to(socket: &OsStr, state: &str) -> io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    let bytes = socket.as_bytes();
    let sent = match bytes.first() {
        Some(b'@') => send_abstract(&sock, &bytes[1..], state)?,
        // systemd only ever passes absolute paths; a relative one would silently depend on
        // the working directory, so it is refused rather than guessed at.
        Some(b'/') => sock.send_to(state.as_bytes(), socket)?,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "NOTIFY_SOCKET={socket:?} is neither an absolute path nor an @abstract name"
                ),
            ))
        }
    };
    // A datagram is sent whole or not at all; a short count would mean a truncated state.
    if sent != state.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("sent {sent} of {} bytes to NOTIFY_SOCKET", state.len()),
        ));
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn send_abstract(sock: &UnixDatagram, name: &[u8], state: &str) -> io::Result<usize> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    sock.send_to_addr(state.as_bytes(), &addr)
}

#[cfg(not(target_os = "linux"))]
fn send_abstract(_sock: &UnixDatagram, _name: &[u8], _state: &str) -> io::Result<usize> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract NOTIFY_SOCKET names exist only on Linux",
    ))
}

/// Succeeds once `addr` accepts a connection, and with `tls` a whole TLS handshake: a probe
/// that hung up mid-handshake would make pingora log a "Downstream handshake error" at ERROR
/// on every start. Only the handshake is checked, not the certificate (an operator's name,
/// not 127.0.0.1, is in it; it is our own socket on loopback, and nothing is sent over it).
pub async fn accepts(addr: std::net::SocketAddr, tls: bool) -> io::Result<()> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    if !tls {
        return Ok(());
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let mut stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await?;
    // A close_notify, so the server sees an orderly end rather than a reset.
    tokio::io::AsyncWriteExt::shutdown(&mut stream).await
}

/// Any certificate, but a genuine handshake: signatures are still checked against it.
#[derive(Debug)]
struct AnyCertificate(std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn receive(sock: &UnixDatagram) -> String {
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn a_path_socket_receives_the_state_as_one_datagram() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        send_to(path.as_os_str(), "READY=1\nSTATUS=listening on 127.0.0.1:1").unwrap();
        assert_eq!(receive(&server), "READY=1\nSTATUS=listening on 127.0.0.1:1");
        send_to(path.as_os_str(), "STOPPING=1").unwrap();
        assert_eq!(receive(&server), "STOPPING=1");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn an_abstract_socket_is_named_with_a_leading_at() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!(
            "samlgate-test-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        );
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        send_to(OsStr::new(&format!("@{name}")), "READY=1").unwrap();
        assert_eq!(receive(&server), "READY=1");
    }

    #[test]
    fn a_relative_path_or_a_missing_socket_is_an_error_not_a_panic() {
        let err = send_to(OsStr::new("notify.sock"), "READY=1").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nobody-listens");
        assert!(send_to(missing.as_os_str(), "READY=1").is_err());
    }
}
