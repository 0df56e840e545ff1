//! Which certificate authorities the proxy's HTTPS connections trust: Mozilla's list (built in,
//! so a machine without a system store works the same), plus those of `server.caFile`. Both
//! clients get the same roots: the proxied traffic's (`upstream::connect`) and the proxy's own
//! calls (OAuth, `count_tokens`, the CLI's login), so one setting fixes a TLS-inspecting network
//! for all of them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use neurolink_shared::config::ServerConfig;
use rustls_pki_types::CertificateDer;

/// The authorities trusted on top of the built-in roots; empty without `server.caFile`. Cheap
/// to clone, and compared by content: a reload rebuilds the clients only when it changes.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ExtraRoots {
    file: Option<PathBuf>,
    certificates: Arc<[CertificateDer<'static>]>,
}

impl std::fmt::Debug for ExtraRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExtraRoots")
            .field("file", &self.file)
            .field("certificates", &self.certificates.len())
            .finish()
    }
}

impl ExtraRoots {
    /// `server.caFile`'s certificates (none without it).
    pub fn from_config(server: &ServerConfig) -> Result<Self, String> {
        match server.ca_file() {
            Some(path) => Self::read(path),
            None => Ok(Self::default()),
        }
    }

    /// The certificates of the PEM (or DER) file at `path`.
    pub fn read(path: &Path) -> Result<Self, String> {
        let certificates =
            neurolink_shared::ca_bundle::read(path).map_err(|e| format!("server.caFile: {e}"))?;
        Ok(Self {
            file: Some(path.to_path_buf()),
            certificates: certificates.into(),
        })
    }

    /// TLS settings for the proxied traffic: the built-in roots and these, ring's algorithms,
    /// no client certificate. ALPN is left to the connector (it offers HTTP/2 and HTTP/1.1).
    pub fn rustls_config(&self) -> Result<rustls::ClientConfig, String> {
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        for (n, cert) in self.certificates.iter().enumerate() {
            roots
                .add(cert.clone())
                .map_err(|e| self.bad_certificate(n, &e))?;
        }
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
    }

    /// `builder` trusting these authorities too (reqwest keeps its built-in roots).
    pub fn reqwest(
        &self,
        mut builder: reqwest::ClientBuilder,
    ) -> Result<reqwest::ClientBuilder, String> {
        for (n, cert) in self.certificates.iter().enumerate() {
            let cert = reqwest::Certificate::from_der(cert.as_ref())
                .map_err(|e| self.bad_certificate(n, &e))?;
            builder = builder.add_root_certificate(cert);
        }
        Ok(builder)
    }

    fn bad_certificate(&self, n: usize, e: &dyn std::fmt::Display) -> String {
        let file = self
            .file
            .as_deref()
            .map_or_else(|| "server.caFile".to_string(), |p| p.display().to_string());
        format!(
            "server.caFile: {file}: certificate {} is not usable: {e}",
            n + 1
        )
    }
}

/// The hint a certificate the proxy does not trust gets in its error: the usual cause on a
/// desktop is a network that inspects TLS.
pub fn hint_for(error_chain: &str) -> Option<&'static str> {
    (error_chain.contains("UnknownIssuer") || error_chain.contains("unknown issuer")).then_some(
        "the upstream's certificate is signed by an authority the proxy does not know; if your \
         network inspects TLS, set server.caFile to its CA certificate (PEM)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_ca_file_means_the_built_in_roots_only() {
        let roots = ExtraRoots::from_config(&ServerConfig::default()).expect("default");
        assert_eq!(roots, ExtraRoots::default());
        assert!(roots.rustls_config().is_ok());
    }

    #[test]
    fn a_certificate_rustls_cannot_use_is_named_with_its_file_and_number() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("corp.pem");
        // PEM framing is right; the content is not a certificate.
        std::fs::write(
            &path,
            "-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let roots = ExtraRoots::read(&path).expect("framing is fine");
        let e = roots.rustls_config().expect_err("not a certificate");
        assert!(e.contains("corp.pem: certificate 1 is not usable"), "{e}");
    }

    #[test]
    fn the_hint_names_the_setting_for_an_unknown_issuer_only() {
        let chain = "cannot connect: invalid peer certificate: UnknownIssuer";
        assert!(hint_for(chain).is_some_and(|h| h.contains("server.caFile")));
        assert_eq!(hint_for("cannot connect: Connection refused"), None);
    }
}
