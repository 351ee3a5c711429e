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

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    #[error("certificate expired at {0} (Unix time)")]
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
}

impl fmt::Debug for CertPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertPair").field("not_after", &self.not_after).finish_non_exhaustive()
    }
}

/// Parses a PEM certificate chain (leaf first) and a PEM private key
/// (PKCS#8, PKCS#1 or SEC1), and checks that they match and that the leaf
/// has not expired.
pub fn load_pair(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertPair, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::Certificate("no CERTIFICATE block in the PEM file".to_owned()));
    };
    let not_after = not_after(leaf)
        .ok_or_else(|| TlsError::Certificate("cannot read the validity of the leaf certificate".to_owned()))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Key(e.to_string()))?;
    let certified = CertifiedKey::from_der(chain, key, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::Mismatch(e.to_string()),
        other => TlsError::Key(other.to_string()),
    })?;
    if not_after < unix_now() {
        return Err(TlsError::Expired(not_after));
    }
    Ok(CertPair { key: Arc::new(certified), not_after })
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
    let not_after = not_after(leaf.der()).unwrap_or_default();
    Ok(SelfSigned { pair: CertPair { key: Arc::new(certified), not_after }, ca_pem: ca.pem() })
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
                    not_after = loaded.not_after,
                    "loaded the new TLS certificate; new connections use it"
                );
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
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The `notAfter` of a DER certificate as a Unix timestamp. A minimal DER
/// walk (Certificate > TBSCertificate > Validity) instead of a full X.509
/// parser dependency for one field.
pub fn not_after(cert: &[u8]) -> Option<i64> {
    let (0x30, cert, _) = tlv(cert)? else { return None };
    let (0x30, tbs, _) = tlv(cert)? else { return None };
    let mut rest = tbs;
    if let (0xa0, _, after_version) = tlv(rest)? {
        rest = after_version;
    }
    let (_serial, _, rest) = tlv(rest)?;
    let (_signature, _, rest) = tlv(rest)?;
    let (_issuer, _, rest) = tlv(rest)?;
    let (0x30, validity, _) = tlv(rest)? else { return None };
    let (_not_before, _, rest) = tlv(validity)?;
    let (tag, time, _) = tlv(rest)?;
    der_time(tag, time)
}

/// One DER tag-length-value at the start of `input`: tag, contents, rest.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count].iter().fold(0usize, |len, &byte| (len << 8) | usize::from(byte));
        (len, &rest[count..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// A UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn der_time(tag: u8, bytes: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(bytes).ok()?;
    let (year, rest) = match tag {
        0x17 => {
            let yy: i64 = text.get(..2)?.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, text.get(2..)?)
        }
        0x18 => (text.get(..4)?.parse().ok()?, text.get(4..)?),
        _ => return None,
    };
    if rest.len() != 11 || !rest.ends_with('Z') || !rest[..10].bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let field = |at: usize| rest[at..at + 2].parse::<i64>().ok();
    let (month, day, hour, minute, second) = (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(not_after: (i32, u8, u8)) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn reads_not_after_of_utc_and_generalized_times() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        let (cert, key) = leaf((2049, 12, 31));
        let pair = load_pair(cert.as_bytes(), key.as_bytes()).unwrap();
        assert_eq!(pair.not_after, 2_524_521_600); // 2049-12-31T00:00:00Z, a UTCTime
        let (cert, key) = leaf((2100, 1, 1));
        assert_eq!(load_pair(cert.as_bytes(), key.as_bytes()).unwrap().not_after, 4_102_444_800);
        // GeneralizedTime
    }

    #[test]
    fn rejects_broken_mismatched_and_expired_pairs() {
        let (cert, key) = leaf((2099, 1, 1));
        let (_, other_key) = leaf((2099, 1, 1));
        assert!(matches!(load_pair(b"garbage", key.as_bytes()), Err(TlsError::Certificate(_))));
        assert!(matches!(load_pair(cert.as_bytes(), b"garbage"), Err(TlsError::Key(_))));
        assert!(matches!(load_pair(cert.as_bytes(), other_key.as_bytes()), Err(TlsError::Mismatch(_))));
        let (old, old_key) = leaf((2021, 1, 1));
        assert!(matches!(load_pair(old.as_bytes(), old_key.as_bytes()), Err(TlsError::Expired(_))));
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
