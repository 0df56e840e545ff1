//! A throwaway certificate authority for the TLS tests: made at run time, with a certificate
//! for `localhost` and `127.0.0.1` signed by it. Nothing trusts it by default; the daemon trusts
//! it only through `server.caFile`, which is how a user behind a TLS-inspecting proxy sets the
//! proxy up.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

/// Which protocols a TLS server offers by ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// `h2` first, then `http/1.1`: what api.anthropic.com offers.
    Http2,
    /// `http/1.1` only.
    Http1,
}

pub struct TestCa {
    /// The authority's certificate, PEM: what goes into `server.caFile`.
    pub ca_pem: String,
    leaf_der: rustls::pki_types::CertificateDer<'static>,
    leaf_key: Vec<u8>,
}

impl TestCa {
    pub fn new() -> anyhow::Result<Self> {
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "NeuroLink test CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate()?;
        let ca_pem = ca.self_signed(&ca_key)?.pem();
        let issuer = Issuer::new(ca, ca_key);
        let leaf_key = KeyPair::generate()?;
        let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?
            .signed_by(&leaf_key, &issuer)?;
        Ok(Self {
            ca_pem,
            leaf_der: leaf.der().clone(),
            leaf_key: leaf_key.serialize_der(),
        })
    }

    /// Keep it in `dir` (the bench hands it to its fake upstream, a child process).
    pub fn save(&self, dir: &std::path::Path) -> std::io::Result<()> {
        std::fs::write(dir.join("ca.pem"), &self.ca_pem)?;
        std::fs::write(dir.join("leaf.der"), self.leaf_der.as_ref())?;
        std::fs::write(dir.join("leaf.key"), &self.leaf_key)
    }

    /// What [`TestCa::save`] kept in `dir`.
    pub fn load(dir: &std::path::Path) -> std::io::Result<Self> {
        Ok(Self {
            ca_pem: std::fs::read_to_string(dir.join("ca.pem"))?,
            leaf_der: std::fs::read(dir.join("leaf.der"))?.into(),
            leaf_key: std::fs::read(dir.join("leaf.key"))?,
        })
    }

    /// A TLS client trusting only this authority, offering HTTP/1.1 by ALPN.
    pub fn connector(&self) -> anyhow::Result<tokio_rustls::TlsConnector> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(cert?)?;
        }
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
    }

    /// A TLS acceptor presenting the `localhost` / `127.0.0.1` certificate, offering `alpn`.
    pub fn acceptor(&self, alpn: Alpn) -> anyhow::Result<TlsAcceptor> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key.clone()));
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![self.leaf_der.clone()], key)?;
        config.alpn_protocols = match alpn {
            Alpn::Http2 => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            Alpn::Http1 => vec![b"http/1.1".to_vec()],
        };
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}
