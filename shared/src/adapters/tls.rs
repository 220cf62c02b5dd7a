//! The platform's trusted roots, read once per process and shared by every
//! HTTP client in it: the AWS SDK's, Stripe's API and the SCIM targets'.
//!
//! Which roots are trusted is the platform's choice, not ours: a customer's
//! SCIM target may sit behind its own CA, added to the system's trust store
//! (or named by `SSL_CERT_FILE`). So the roots are read from the system, never
//! compiled in; but from its one bundle file, where distributions keep every
//! trusted root (Amazon Linux, Lambda's, keeps
//! `/etc/pki/tls/certs/ca-bundle.crt`, which `update-ca-trust` rebuilds with
//! the local CAs), instead of opening each file of a certificate directory.
//! `SSL_CERT_FILE` names another bundle; an explicit `SSL_CERT_DIR`, or a
//! system without a bundle, is read as OpenSSL would (through
//! `rustls-native-certs`).
//!
//! Nothing is read at a function's start: the roots are read when the first
//! request needs them. The AWS SDK's client would parse its trust store
//! once for every SDK client a function builds, at the build (to have it
//! done before the first request); [`sdk_http_client`] defers that to the
//! first request and does it once.

use aws_smithy_runtime_api::client::http::{HttpClient, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector};
use aws_smithy_runtime_api::client::runtime_components::{RuntimeComponents, RuntimeComponentsBuilder};
use aws_smithy_types::config_bag::ConfigBag;
use base64::Engine;
use rustls::pki_types::CertificateDer;
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// Where distributions keep the bundle of every trusted root, in the order
/// they are looked for.
pub const BUNDLES: [&str; 4] = [
    // Amazon Linux (Lambda's), Fedora, RHEL.
    "/etc/pki/tls/certs/ca-bundle.crt",
    // Debian, Ubuntu, Alpine.
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    // macOS, the BSDs, Alpine.
    "/etc/ssl/cert.pem",
];

/// The process's trusted roots: the certificates that parse as trust
/// anchors (one odd certificate in a bundle is left out instead of failing
/// every client), as rustls's store and as DER.
pub struct Roots {
    pub store: Arc<rustls::RootCertStore>,
    pub certs: Vec<CertificateDer<'static>>,
    /// Where they were read from (a file, or the platform's directory).
    pub source: String,
}

/// The roots, read on the first call and shared after.
pub fn roots() -> &'static Roots {
    static ROOTS: OnceLock<Roots> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let bundle = match (var("SSL_CERT_FILE"), var("SSL_CERT_DIR")) {
            (_, Some(_)) => None,
            (Some(file), None) => Some(file),
            (None, None) => BUNDLES.iter().find(|p| Path::new(p).is_file()).map(|p| p.to_string()),
        };
        bundle.and_then(|path| std::fs::read(&path).ok().map(|pem| of_pem(&pem, path))).filter(|r| !r.store.is_empty()).unwrap_or_else(platform)
    })
}

/// Roots from a bundle's text: each `CERTIFICATE` block, decoded. (The
/// certificates are public: the decoding need not take constant time, and
/// the constant-time decoder of `rustls-pki-types` was most of a start.)
pub fn of_pem(pem: &[u8], source: String) -> Roots {
    let text = String::from_utf8_lossy(pem);
    let mut certs = Vec::new();
    let mut rest = text.as_ref();
    while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
        let body = &rest[start + "-----BEGIN CERTIFICATE-----".len()..];
        let Some(end) = body.find("-----END CERTIFICATE-----") else { break };
        let b64: String = body[..end].chars().filter(|c| !c.is_ascii_whitespace()).collect();
        if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(b64) {
            certs.push(CertificateDer::from(der));
        }
        rest = &body[end..];
    }
    of_certs(certs, source)
}

fn of_certs(all: Vec<CertificateDer<'static>>, source: String) -> Roots {
    let mut store = rustls::RootCertStore::empty();
    let certs = all.into_iter().filter(|c| store.add(c.clone()).is_ok()).collect();
    Roots { store: Arc::new(store), certs, source }
}

/// The platform's roots as OpenSSL finds them (the environment's
/// `SSL_CERT_FILE` and `SSL_CERT_DIR`, else the system's file and directory).
fn platform() -> Roots {
    let found = rustls_native_certs::load_native_certs();
    if !found.errors.is_empty() {
        tracing::warn!(errors = ?found.errors, "some of the platform's root certificates could not be read");
    }
    of_certs(found.certs, "the platform's certificate directory".into())
}

/// The roots as PEM, what the AWS SDK's trust store takes.
pub fn pem(roots: &Roots) -> Vec<u8> {
    let mut pem = Vec::new();
    for cert in &roots.certs {
        pem.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
        let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
        for line in b64.as_bytes().chunks(64) {
            pem.extend_from_slice(line);
            pem.push(b'\n');
        }
        pem.extend_from_slice(b"-----END CERTIFICATE-----\n");
    }
    pem
}

/// A rustls client configuration over the shared roots, with the aws-lc-rs
/// provider the AWS SDK already builds.
pub fn client_config() -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports the default protocol versions")
        .with_root_certificates(roots().store.clone())
        .with_no_client_auth()
}

/// The AWS SDK's HTTPS client (rustls, aws-lc-rs) over the shared roots,
/// built when the first request of any SDK client needs a connection.
pub fn sdk_http_client() -> SharedHttpClient {
    SharedHttpClient::new(LazySdkClient(Arc::new(OnceLock::new())))
}

#[derive(Debug, Clone)]
struct LazySdkClient(Arc<OnceLock<SharedHttpClient>>);

impl LazySdkClient {
    fn inner(&self) -> &SharedHttpClient {
        self.0.get_or_init(|| {
            use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode, TlsContext, TrustStore};
            let trust = TrustStore::empty().with_pem_certificate(pem(roots()));
            let context = TlsContext::builder().with_trust_store(trust).build().expect("a trust store of PEM certificates");
            aws_smithy_http_client::Builder::new().tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc)).tls_context(context).build_https()
        })
    }
}

impl HttpClient for LazySdkClient {
    /// The connector for these settings: the SDK's own (built, with its TLS
    /// configuration, once per settings), made when a request needs it.
    fn http_connector(&self, settings: &HttpConnectorSettings, components: &RuntimeComponents) -> SharedHttpConnector {
        self.inner().http_connector(settings, components)
    }

    /// Nothing to check or build when an SDK client is built (the SDK's own
    /// client builds its connector here, for every SDK client: that was most
    /// of a function's start).
    fn validate_base_client_config(&self, _: &RuntimeComponentsBuilder, _: &ConfigBag) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;

    #[test]
    fn a_bundle_is_read_whole_and_what_does_not_parse_is_left_out() {
        let Some(path) = BUNDLES.iter().find(|p| Path::new(p).is_file()) else { panic!("no CA bundle on this machine (looked at {BUNDLES:?})") };
        let text = std::fs::read(path).unwrap();
        let roots = of_pem(&text, path.to_string());
        let n = roots.store.len();
        assert!(n > 50, "{n} roots from {path}");
        // What rustls's own (constant-time) PEM reader finds, the same.
        let theirs: Vec<CertificateDer> = CertificateDer::pem_slice_iter(&text).collect::<Result<_, _>>().unwrap();
        assert_eq!(roots.certs, theirs.into_iter().filter(|c| rustls::RootCertStore::empty().add(c.clone()).is_ok()).collect::<Vec<_>>());
        // A broken block and a certificate that is no CA's are left out.
        let mut broken = text.clone();
        broken.extend_from_slice(b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n");
        assert_eq!(of_pem(&broken, "x".into()).store.len(), n);
        // The PEM given to the SDK holds exactly those roots, and parses whole.
        assert_eq!(CertificateDer::pem_slice_iter(&pem(&roots)).collect::<Result<Vec<_>, _>>().unwrap(), roots.certs);
        // The platform's directory gives the same roots (the bundle is built from it).
        let platform = platform();
        assert!(platform.store.len() >= n * 9 / 10, "{} from the directory, {n} from the bundle", platform.store.len());
    }
}
