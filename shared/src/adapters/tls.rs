//! The platform's trusted roots, read once per process and shared by every
//! HTTP client in it: the AWS SDK's, Stripe's API and the SCIM targets'.
//!
//! Which roots are trusted is the platform's choice, not ours: a customer's
//! SCIM target may sit behind its own CA, added to the system's trust store
//! (or named by `SSL_CERT_FILE`). So the roots are read from the system, never
//! compiled in; but from its one bundle file, where distributions keep every
//! trusted root (Amazon Linux, Lambda's, keeps
//! `/etc/pki/tls/certs/ca-bundle.crt`, which `update-ca-trust` rebuilds with
//! the local CAs), instead of opening each file of a certificate directory,
//! once per client, at every start. `SSL_CERT_FILE` names another bundle; an
//! explicit `SSL_CERT_DIR`, or a system without a bundle, is read as OpenSSL
//! would (through `rustls-native-certs`). Nothing is read until the first
//! client needs it.

use base64::Engine;
use rustls::pki_types::pem::PemObject;
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

/// The process's trusted roots: as rustls's store (what reqwest's clients
/// use) and as PEM (what the AWS SDK's trust store takes); both hold
/// exactly the certificates that parse as trust anchors, so that one odd
/// certificate in a bundle is left out instead of failing every client.
pub struct Roots {
    pub store: Arc<rustls::RootCertStore>,
    pub pem: Vec<u8>,
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

/// Roots from a bundle's text.
pub fn of_pem(pem: &[u8], source: String) -> Roots {
    of_certs(CertificateDer::pem_slice_iter(pem).filter_map(Result::ok), source)
}

fn of_certs<'a>(certs: impl IntoIterator<Item = CertificateDer<'a>>, source: String) -> Roots {
    let mut store = rustls::RootCertStore::empty();
    let mut pem = Vec::new();
    for cert in certs {
        if store.add(cert.clone()).is_ok() {
            pem.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
            let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
            for line in b64.as_bytes().chunks(64) {
                pem.extend_from_slice(line);
                pem.push(b'\n');
            }
            pem.extend_from_slice(b"-----END CERTIFICATE-----\n");
        }
    }
    Roots { store: Arc::new(store), pem, source }
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

/// A rustls client configuration over the shared roots, with the aws-lc-rs
/// provider the AWS SDK already builds.
pub fn client_config() -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports the default protocol versions")
        .with_root_certificates(roots().store.clone())
        .with_no_client_auth()
}

/// The AWS SDK's HTTPS client over the same roots (rustls, aws-lc-rs); the
/// SDK parses them when it first builds a connection pool.
pub fn sdk_http_client() -> aws_sdk_dynamodb::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode, TlsContext, TrustStore};
    let trust = TrustStore::empty().with_pem_certificate(roots().pem.clone());
    let context = TlsContext::builder().with_trust_store(trust).build().expect("a trust store of PEM certificates");
    aws_smithy_http_client::Builder::new().tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc)).tls_context(context).build_https()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_is_read_whole_and_what_does_not_parse_is_left_out() {
        let Some(path) = BUNDLES.iter().find(|p| Path::new(p).is_file()) else { panic!("no CA bundle on this machine (looked at {BUNDLES:?})") };
        let pem = std::fs::read(path).unwrap();
        let roots = of_pem(&pem, path.to_string());
        let n = roots.store.len();
        assert!(n > 50, "{n} roots from {path}");
        // A bundle with a broken certificate and one that is no CA's: both left out.
        let mut broken = pem.clone();
        broken.extend_from_slice(b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n");
        let again = of_pem(&broken, "x".into());
        assert_eq!(again.store.len(), n);
        // The PEM given to the SDK holds exactly those roots, and parses whole.
        assert_eq!(CertificateDer::pem_slice_iter(&again.pem).collect::<Result<Vec<_>, _>>().unwrap().len(), n);
        // The platform's directory gives the same roots (the bundle is built from it).
        let platform = platform();
        assert!(platform.store.len() >= n * 9 / 10, "{} from the directory, {n} from the bundle", platform.store.len());
    }
}
