//! TLS for the webhook: rustls with the ring provider, TLS 1.2 and 1.3,
//! ALPN `h2` and `http/1.1`, and a certificate that can change under a
//! running server.
//!
//! The certificate comes from PEM files (a Kubernetes Secret mount, rotated
//! by an atomic symlink swap) or is generated at start-up (`--self-signed`).
//! [`CertResolver`] hands every new handshake the current pair; a
//! [`CertReloader`] polls the files and swaps in a changed pair once it has
//! parsed it and checked that key and certificate belong together. A broken
//! pair is logged and counted, and the old one stays in service.
//!
//! The leaf's validity is read with `x509-parser` (UTCTime and
//! GeneralizedTime alike): an expired certificate is refused, and one not yet
//! valid is served with a warning, because a few minutes of clock skew
//! between the issuer (cert-manager, a CA) and the node are common and
//! refusing would fail the start-up or keep an older certificate in service.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use super::metrics::{Metrics, ReloadResult};
use super::swap::Swap;

/// Why a certificate and key cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("certificate: {0}")]
    Certificate(String),
    #[error("private key: {0}")]
    Key(String),
    #[error("certificate and private key do not belong together: {0}")]
    Mismatch(String),
    #[error("certificate expired at {}", crate::time::format_unix_seconds(*.0))]
    Expired(i64),
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The crypto provider podgate uses everywhere: ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain with its key, ready to serve.
#[derive(Clone)]
pub struct CertPair {
    pub key: Arc<CertifiedKey>,
    /// `notAfter` of the leaf certificate, as a Unix timestamp.
    pub not_after: i64,
    /// `notBefore` of the leaf certificate, as a Unix timestamp.
    pub not_before: i64,
}

impl CertPair {
    /// Logs a warning if the leaf is not valid yet at `now` (Unix time):
    /// it is served all the same (see the module documentation), but a
    /// client whose clock is behind `notBefore` refuses it.
    pub fn warn_if_not_yet_valid(&self, now: i64, cert: &Path) {
        if self.not_before > now {
            tracing::warn!(
                cert = %cert.display(),
                not_before = %crate::time::format_unix_seconds(self.not_before),
                seconds_early = self.not_before - now,
                "the TLS certificate is not valid yet (clock skew with its issuer?); serving it, \
                 but clients whose clock is behind notBefore will refuse it"
            );
        }
    }
}

impl fmt::Debug for CertPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertPair")
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// Parses a PEM certificate chain (leaf first) and a PEM private key
/// (PKCS#8, PKCS#1 or SEC1), and checks that they match and that the leaf
/// has not expired. A leaf not valid yet is accepted (the caller warns).
pub fn load_pair(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertPair, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::Certificate("no CERTIFICATE block in the PEM file".to_owned()));
    };
    let Validity { not_before, not_after } = validity(leaf).map_err(TlsError::Certificate)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Key(e.to_string()))?;
    let certified = CertifiedKey::from_der(chain, key, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::Mismatch(e.to_string()),
        other => TlsError::Key(other.to_string()),
    })?;
    if not_after < unix_now() {
        return Err(TlsError::Expired(not_after));
    }
    Ok(CertPair { key: Arc::new(certified), not_after, not_before })
}

/// The certificate and key file paths (`--tls-cert`, `--tls-key`).
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertFiles {
    /// Reads and parses both files (at start-up).
    pub fn load(&self) -> Result<CertPair, TlsError> {
        let cert = read(&self.cert)?;
        let key = read(&self.key)?;
        load_pair(&cert, &key)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read { path: path.display().to_string(), error })
}

/// Hands each new TLS handshake the current certificate.
#[derive(Debug)]
pub struct CertResolver {
    current: Swap<CertifiedKey>,
}

impl CertResolver {
    pub fn new(pair: &CertPair) -> Self {
        CertResolver { current: Swap::new(pair.key.clone()) }
    }

    /// Serves `pair` to every connection from now on; open connections keep theirs.
    pub fn replace(&self, pair: &CertPair) {
        self.current.store(pair.key.clone());
    }

    /// The certificate served now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load())
    }
}

/// The rustls configuration of the webhook listener.
pub fn server_config(resolver: Arc<CertResolver>) -> Result<ServerConfig, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A certificate generated at start-up, and the CA that signed it.
pub struct SelfSigned {
    pub pair: CertPair,
    /// The CA certificate clients must trust, PEM.
    pub ca_pem: String,
}

/// Generates a throw-away CA and a serving certificate signed by it for
/// `localhost`, `127.0.0.1`, `::1` and `dns_names`, valid for a year.
pub fn self_signed(dns_names: &[String]) -> Result<SelfSigned, TlsError> {
    let now = rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(unix_now().max(0).unsigned_abs());
    let not_before = now - Duration::from_secs(3600);
    let expires = now + Duration::from_secs(365 * 24 * 3600);

    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.distinguished_name.push(DnType::CommonName, "podgate self-signed CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.not_before = not_before;
    ca_params.not_after = expires;
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    names.extend(dns_names.iter().filter(|n| !names.contains(n)).cloned().collect::<Vec<_>>());
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name.push(DnType::CommonName, "podgate");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = not_before;
    params.not_after = expires;
    let key = KeyPair::generate()?;
    let leaf = params.signed_by(&key, &ca)?;

    let certified = CertifiedKey::from_der(
        vec![leaf.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        &provider(),
    )?;
    let Validity { not_before, not_after } = validity(leaf.der()).map_err(TlsError::Certificate)?;
    Ok(SelfSigned { pair: CertPair { key: Arc::new(certified), not_after, not_before }, ca_pem: ca.pem() })
}

/// What one poll of the certificate files found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// Same bytes as last time (or a swap was in progress: try again later).
    Unchanged,
    /// A new pair is served.
    Loaded,
    /// The files changed but cannot be served; the old pair stays.
    Rejected,
}

/// Polls `--tls-cert`/`--tls-key` and swaps in a changed, valid pair.
pub struct CertReloader {
    files: CertFiles,
    resolver: Arc<CertResolver>,
    metrics: Arc<Metrics>,
    /// The bytes of the last pair tried, loaded or rejected.
    seen: Option<(Vec<u8>, Vec<u8>)>,
    /// Whether the last poll could not read the files (counted once).
    unreadable: bool,
}

impl CertReloader {
    /// Starts from the files as they are now (the pair loaded at start-up).
    pub fn new(files: CertFiles, resolver: Arc<CertResolver>, metrics: Arc<Metrics>) -> Self {
        let seen = std::fs::read(&files.cert).ok().zip(std::fs::read(&files.key).ok());
        CertReloader { files, resolver, metrics, seen, unreadable: false }
    }

    /// Reads both files and acts on a change.
    pub async fn check(&mut self) -> Reload {
        let pair = match self.read_consistent().await {
            Ok(Some(pair)) => pair,
            Ok(None) => return Reload::Unchanged,
            Err(error) => {
                if !self.unreadable {
                    self.unreadable = true;
                    self.metrics.tls_reload(ReloadResult::Error);
                    tracing::warn!(%error, "cannot read the TLS certificate files; keeping the current certificate");
                }
                return Reload::Rejected;
            }
        };
        self.unreadable = false;
        if self.seen.as_ref() == Some(&pair) {
            return Reload::Unchanged;
        }
        let result = load_pair(&pair.0, &pair.1);
        self.seen = Some(pair);
        match result {
            Ok(loaded) => {
                self.resolver.replace(&loaded);
                self.metrics.set_certificate_expiry(loaded.not_after);
                self.metrics.tls_reload(ReloadResult::Success);
                tracing::info!(
                    cert = %self.files.cert.display(),
                    not_after = %crate::time::format_unix_seconds(loaded.not_after),
                    "loaded the new TLS certificate; new connections use it"
                );
                loaded.warn_if_not_yet_valid(unix_now(), &self.files.cert);
                Reload::Loaded
            }
            Err(error) => {
                self.metrics.tls_reload(ReloadResult::Error);
                tracing::error!(
                    %error,
                    cert = %self.files.cert.display(),
                    key = %self.files.key.display(),
                    "rejected the changed TLS certificate files; keeping the current certificate"
                );
                Reload::Rejected
            }
        }
    }

    /// Reads certificate, key and certificate again: if the two certificate
    /// reads differ, a symlink swap happened in between and the pair may be
    /// mixed, so `None` asks to try again at the next poll.
    async fn read_consistent(&self) -> Result<Option<(Vec<u8>, Vec<u8>)>, TlsError> {
        let read = |path: PathBuf| async move {
            tokio::fs::read(&path).await.map_err(|error| TlsError::Read { path: path.display().to_string(), error })
        };
        let cert = read(self.files.cert.clone()).await?;
        let key = read(self.files.key.clone()).await?;
        let again = read(self.files.cert.clone()).await?;
        Ok((cert == again).then_some((cert, key)))
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    crate::time::Timestamp::now().as_second()
}

/// The validity period of a certificate, as Unix timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: i64,
    pub not_after: i64,
}

/// The validity period of a DER certificate (`x509-parser`: RFC 5280, a
/// `UTCTime` before 2050 and a `GeneralizedTime` from 2050 on).
pub fn validity(cert: &[u8]) -> Result<Validity, String> {
    let (rest, parsed) =
        x509_parser::parse_x509_certificate(cert).map_err(|e| format!("cannot parse the leaf certificate: {e}"))?;
    if !rest.is_empty() {
        return Err(format!("{} bytes after the end of the leaf certificate", rest.len()));
    }
    let period = parsed.validity();
    Ok(Validity { not_before: period.not_before.timestamp(), not_after: period.not_after.timestamp() })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for localhost valid from `not_before` to
    /// `not_after` (year, month, day, midnight UTC): PEM, key PEM and DER.
    fn cert(not_before: (i32, u8, u8), not_after: (i32, u8, u8)) -> (String, String, Vec<u8>) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    fn leaf(not_after: (i32, u8, u8)) -> (String, String) {
        let (cert, key, _) = cert((2020, 1, 1), not_after);
        (cert, key)
    }

    /// Whether `der` holds `time` encoded as a UTCTime (tag 0x17) or a
    /// GeneralizedTime (0x18).
    fn encodes(der: &[u8], tag: u8, time: &str) -> bool {
        let mut needle = vec![tag, u8::try_from(time.len()).unwrap()];
        needle.extend_from_slice(time.as_bytes());
        der.windows(needle.len()).any(|window| window == needle)
    }

    #[test]
    fn reads_utc_time_and_generalized_time_validity() {
        const UTC_TIME: u8 = 0x17;
        const GENERALIZED_TIME: u8 = 0x18;
        // UTCTime up to 2049, GeneralizedTime from 2050 (RFC 5280, 4.1.2.5).
        let (pem, key, der) = cert((1950, 1, 1), (2049, 12, 31));
        assert!(encodes(&der, UTC_TIME, "500101000000Z") && encodes(&der, UTC_TIME, "491231000000Z"));
        let pair = load_pair(pem.as_bytes(), key.as_bytes()).unwrap();
        assert_eq!(pair.not_before, -631_152_000); // 1950-01-01T00:00:00Z: "50" is 1950
        assert_eq!(pair.not_after, 2_524_521_600); // 2049-12-31T00:00:00Z: "49" is 2049

        let (pem, key, der) = cert((2020, 1, 1), (2050, 1, 1));
        assert!(encodes(&der, GENERALIZED_TIME, "20500101000000Z"));
        assert_eq!(load_pair(pem.as_bytes(), key.as_bytes()).unwrap().not_after, 2_524_608_000);

        let (pem, key, der) = cert((2020, 1, 1), (2100, 1, 1));
        assert!(encodes(&der, GENERALIZED_TIME, "21000101000000Z"));
        assert_eq!(load_pair(pem.as_bytes(), key.as_bytes()).unwrap().not_after, 4_102_444_800);

        // The last day X.509 can express, past jiff's Timestamp::MAX.
        let (pem, key, der) = cert((2020, 1, 1), (9999, 12, 31));
        assert!(encodes(&der, GENERALIZED_TIME, "99991231000000Z"));
        let pair = load_pair(pem.as_bytes(), key.as_bytes()).unwrap();
        assert_eq!(pair.not_after, 253_402_214_400);
        assert_eq!(crate::time::format_unix_seconds(pair.not_after), "9999-12-31T00:00:00Z");
    }

    #[test]
    fn rejects_broken_mismatched_and_expired_pairs() {
        let (cert, key) = leaf((2099, 1, 1));
        let (_, other_key) = leaf((2099, 1, 1));
        assert!(matches!(load_pair(b"garbage", key.as_bytes()), Err(TlsError::Certificate(_))));
        assert!(matches!(load_pair(cert.as_bytes(), b"garbage"), Err(TlsError::Key(_))));
        assert!(matches!(load_pair(cert.as_bytes(), other_key.as_bytes()), Err(TlsError::Mismatch(_))));
        let (old, old_key) = leaf((2021, 1, 1));
        let error = load_pair(old.as_bytes(), old_key.as_bytes()).unwrap_err();
        assert!(matches!(error, TlsError::Expired(1_609_459_200)), "{error:?}");
        assert_eq!(error.to_string(), "certificate expired at 2021-01-01T00:00:00Z");
    }

    #[test]
    fn a_certificate_not_valid_yet_is_accepted() {
        let (pem, key, _) = cert((2098, 1, 1), (2099, 1, 1));
        let pair = load_pair(pem.as_bytes(), key.as_bytes()).unwrap();
        assert_eq!(pair.not_before, 4_039_372_800); // 2098-01-01T00:00:00Z
        assert!(pair.not_before > unix_now());
    }

    #[test]
    fn a_der_certificate_that_is_not_x509_is_refused() {
        // Bytes that are no certificate: a clear error, no panic.
        for der in [&b""[..], b"\x30\x03\x02\x01\x01", b"\x30\x82\xff\xff", &[0x30; 64]] {
            assert!(validity(der).is_err(), "{der:?}");
        }
        let (_, _, der) = cert((2020, 1, 1), (2099, 1, 1));
        let mut trailing = der.clone();
        trailing.push(0);
        assert_eq!(validity(&trailing).unwrap_err(), "1 bytes after the end of the leaf certificate");
        assert!(validity(&der[..der.len() - 1]).is_err());
    }

    #[test]
    fn self_signed_certificate_is_valid_for_a_year() {
        let generated = self_signed(&["podgate.example.svc".to_owned()]).unwrap();
        let year = 365 * 24 * 3600;
        assert!((generated.pair.not_after - unix_now() - year).abs() < 120);
        assert!(generated.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(server_config(Arc::new(CertResolver::new(&generated.pair))).is_ok());
    }
}
