//! TLS from the relay to PostgreSQL, with rustls and its ring provider (the one reqwest already
//! brings, so the relay has one crypto library). tokio-postgres knows only sslmode `disable`,
//! `prefer` and `require`, and no CA file, so the relay takes `sslmode` and `sslrootcert` out of
//! the connection string itself and gives them libpq's meaning:
//!
//! - `disable`: plain TCP.
//! - `prefer` (libpq's default): TLS when the server offers it, else plain.
//! - `require`: TLS or no connection.
//! - `verify-ca`: TLS, the server's chain checked against the CA file, not its name.
//! - `verify-full`: TLS, the chain and the host name checked.
//!
//! As in libpq, `prefer` and `require` check the chain (as `verify-ca`) when a CA file is given.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use percent_encoding::percent_decode_str;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode`, all of it but `allow`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self, String> {
        match value {
            "disable" => Ok(Self::Disable),
            "prefer" => Ok(Self::Prefer),
            "require" => Ok(Self::Require),
            "verify-ca" => Ok(Self::VerifyCa),
            "verify-full" => Ok(Self::VerifyFull),
            // plain first, TLS only if the server insists: tokio-postgres cannot, and it protects
            // nothing that `prefer` does not
            "allow" => Err("sslmode=allow is not supported: use prefer, require or a verify mode".into()),
            other => Err(format!("invalid sslmode {other:?}: disable, prefer, require, verify-ca or verify-full")),
        }
    }

    /// What tokio-postgres does before the handshake; the checks are the connector's.
    fn for_tokio_postgres(self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as Pg;
        match self {
            Self::Disable => Pg::Disable,
            Self::Prefer => Pg::Prefer,
            Self::Require | Self::VerifyCa | Self::VerifyFull => Pg::Require,
        }
    }

    /// The mode's name in a connection string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

/// The `--database-url`: tokio-postgres's settings (it reads and edits as one, through `Deref`)
/// plus the TLS settings tokio-postgres does not know.
#[derive(Debug, Clone)]
pub struct DatabaseUrl {
    pg: tokio_postgres::Config,
    pub ssl_mode: SslMode,
    /// `sslrootcert`, read when the string is parsed.
    pub ca: Option<CaFile>,
}

impl DatabaseUrl {
    /// Parses a libpq `key=value` string or a `postgres://` URL; `sslrootcert` is read here, so
    /// a missing or empty CA file is a usage error, not a failure at the first connection.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (rest, tls) = take_tls_params(s);
        let mut pg = rest.parse::<tokio_postgres::Config>().map_err(|e| format!("invalid connection string: {e}"))?;
        let mut ssl_mode = SslMode::Prefer;
        let mut ca = None;
        for (key, value) in tls {
            match key {
                TlsParam::SslMode => ssl_mode = SslMode::parse(&value)?,
                TlsParam::SslRootCert => ca = Some(CaFile::read(Path::new(&value))?),
            }
        }
        pg.ssl_mode(ssl_mode.for_tokio_postgres());
        Ok(Self { pg, ssl_mode, ca })
    }
}

impl Deref for DatabaseUrl {
    type Target = tokio_postgres::Config;
    fn deref(&self) -> &Self::Target {
        &self.pg
    }
}

impl DerefMut for DatabaseUrl {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.pg
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TlsParam {
    SslMode,
    SslRootCert,
}

impl TlsParam {
    fn of(key: &str) -> Option<Self> {
        match key {
            "sslmode" => Some(Self::SslMode),
            "sslrootcert" => Some(Self::SslRootCert),
            _ => None,
        }
    }
}

/// Splits `s` into the connection string without `sslmode` and `sslrootcert` and those two
/// settings, in order. A string this cannot read is returned whole, for tokio-postgres to
/// refuse with its own message.
fn take_tls_params(s: &str) -> (String, Vec<(TlsParam, String)>) {
    let url_query = ["postgres://", "postgresql://"]
        .iter()
        .any(|prefix| s.starts_with(prefix))
        .then(|| s.split_once('?'))
        .flatten();
    if let Some((base, query)) = url_query {
        let mut taken = Vec::new();
        let mut kept = Vec::new();
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match TlsParam::of(&percent_decode_str(key).decode_utf8_lossy()) {
                Some(param) => taken.push((param, percent_decode_str(value).decode_utf8_lossy().into_owned())),
                None => kept.push(pair),
            }
        }
        let rest = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
        return (rest, taken);
    }
    match conninfo_pairs(s) {
        Some(pairs) => {
            let mut taken = Vec::new();
            let mut kept = Vec::new();
            for (key, value, text) in pairs {
                match TlsParam::of(&key) {
                    Some(param) => taken.push((param, value)),
                    None => kept.push(text),
                }
            }
            (kept.join(" "), taken)
        }
        None => (s.to_string(), Vec::new()),
    }
}

/// The `key = value` pairs of a libpq connection string, each with its own text: values bare
/// or single-quoted, a backslash escaping the next character (libpq's `conninfo_parse`).
fn conninfo_pairs(s: &str) -> Option<Vec<(String, String, &str)>> {
    let mut pairs = Vec::new();
    let mut chars = s.char_indices().peekable();
    loop {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let Some(&(start, _)) = chars.peek() else { return Some(pairs) };
        let mut key = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        chars.next_if(|(_, c)| *c == '=')?;
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        let quoted = chars.next_if(|(_, c)| *c == '\'').is_some();
        let end = loop {
            match chars.next() {
                None if quoted => return None,
                None => break s.len(),
                Some((i, c)) if !quoted && c.is_whitespace() => break i,
                Some((i, '\'')) if quoted => break i + 1,
                Some((_, '\\')) => value.push(chars.next()?.1),
                Some((_, c)) => value.push(c),
            }
        };
        pairs.push((key, value, &s[start..end]));
    }
}

/// A PEM file of CA certificates, read once.
#[derive(Clone)]
pub struct CaFile {
    pub path: PathBuf,
    roots: Arc<RootCertStore>,
    /// Checks a chain and a name against `roots`; built here so a file rustls cannot use is
    /// refused when the flags are read.
    verifier: Arc<WebPkiServerVerifier>,
}

impl fmt::Debug for CaFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaFile").field("path", &self.path).field("certificates", &self.roots.len()).finish()
    }
}

impl CaFile {
    pub fn read(path: &Path) -> Result<Self, String> {
        let shown = path.display();
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("cannot read CA file {shown}: {e}"))?;
        let mut roots = RootCertStore::empty();
        for cert in certs {
            roots.add(cert).map_err(|e| format!("CA file {shown}: {e}"))?;
        }
        if roots.is_empty() {
            return Err(format!("CA file {shown} holds no certificate"));
        }
        let roots = Arc::new(roots);
        let verifier = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| format!("CA file {shown}: {e}"))?;
        Ok(Self { path: path.to_path_buf(), roots, verifier })
    }

    /// Reads the file named by `--db-ca-file`.
    pub fn parse_flag(path: &str) -> Result<Self, String> {
        Self::read(Path::new(path))
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The connector the pool hands tokio-postgres: it checks what `mode` and `ca` ask for (a
/// `disable` pool never calls it). A verify mode without a CA file is refused by
/// `Config::validate`; here it checks as `require` does.
pub fn connector(mode: SslMode, ca: Option<&CaFile>) -> MakeRustlsConnect {
    let provider = provider();
    let verifier: Arc<dyn ServerCertVerifier> = match (mode, ca) {
        (SslMode::VerifyFull, Some(ca)) => ca.verifier.clone(),
        (_, Some(ca)) => Arc::new(ChainOnly(ca.verifier.clone())),
        (_, None) => Arc::new(NoCheck(provider.clone())),
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports rustls's default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // what libpq 17 sends: required by a server that takes direct TLS (sslnegotiation=direct)
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    MakeRustlsConnect::new(config)
}

/// `verify-ca`: the chain is checked, the name is not. rustls checks the chain first and the name
/// last, so a name error means the chain passed.
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
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer` and `require` without a CA file: encrypted, any certificate accepted (libpq's
/// meaning). The handshake's signatures are still checked, so the peer holds the certificate's
/// key, and SCRAM's channel binding (over that certificate) still exposes a relaying man in the
/// middle to a password login.
#[derive(Debug)]
struct NoCheck(Arc<CryptoProvider>);

impl ServerCertVerifier for NoCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(s: &str) -> (String, Vec<(TlsParam, String)>) {
        take_tls_params(s)
    }

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_of_a_key_value_string() {
        let (rest, taken) =
            split("host=db.example  sslmode = verify-full port=6543 sslrootcert='/etc/ca dir/it\\'s.pem' user=u");
        assert_eq!(rest, "host=db.example port=6543 user=u");
        assert_eq!(
            taken,
            vec![(TlsParam::SslMode, "verify-full".into()), (TlsParam::SslRootCert, "/etc/ca dir/it's.pem".into())]
        );
        let (rest, taken) = split("host=h password='p w' sslmode=require");
        assert_eq!(rest, "host=h password='p w'");
        assert_eq!(taken, vec![(TlsParam::SslMode, "require".into())]);
    }

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_of_a_url() {
        let (rest, taken) =
            split("postgres://u:p%40ss@db.example:6543/postgres?sslmode=verify-ca&sslrootcert=%2Fca.pem");
        assert_eq!(rest, "postgres://u:p%40ss@db.example:6543/postgres");
        assert_eq!(taken, vec![(TlsParam::SslMode, "verify-ca".into()), (TlsParam::SslRootCert, "/ca.pem".into())]);
        let (rest, _) = split("postgresql://db/x?application_name=a&sslmode=require&connect_timeout=2");
        assert_eq!(rest, "postgresql://db/x?application_name=a&connect_timeout=2");
    }

    #[test]
    fn every_libpq_sslmode_but_allow_is_understood() {
        for mode in [SslMode::Disable, SslMode::Prefer, SslMode::Require, SslMode::VerifyCa, SslMode::VerifyFull] {
            let url = DatabaseUrl::parse(&format!("host=h sslmode={}", mode.as_str())).unwrap();
            assert_eq!(url.ssl_mode, mode);
        }
        let url = DatabaseUrl::parse("host=h").unwrap();
        assert_eq!(url.ssl_mode, SslMode::Prefer, "libpq's default");
        assert_eq!(url.get_ssl_mode(), tokio_postgres::config::SslMode::Prefer);
        let url = DatabaseUrl::parse("postgres://h/db?sslmode=verify-full").unwrap();
        assert_eq!(url.get_ssl_mode(), tokio_postgres::config::SslMode::Require, "TLS or nothing");
        assert!(DatabaseUrl::parse("host=h sslmode=allow").unwrap_err().contains("not supported"));
        assert!(DatabaseUrl::parse("host=h sslmode=verify").unwrap_err().contains("invalid sslmode"));
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_refused_when_parsed() {
        let err = DatabaseUrl::parse("host=h sslmode=verify-full sslrootcert=/nonexistent/ca.pem").unwrap_err();
        assert!(err.contains("cannot read CA file /nonexistent/ca.pem"), "{err}");
        let empty = std::env::temp_dir().join(format!("voxanne-relay-empty-ca-{}.pem", std::process::id()));
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = CaFile::read(&empty).unwrap_err();
        std::fs::remove_file(&empty).unwrap();
        assert!(err.contains("holds no certificate"), "{err}");
    }
}
