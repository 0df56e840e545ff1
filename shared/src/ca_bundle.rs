//! `server.caFile`: certificate authorities the proxy trusts for upstream HTTPS on top of its
//! built-in roots. Behind a proxy that inspects TLS (a corporate gateway re-signs every site with
//! its own authority), Anthropic's certificate arrives signed by that authority, which no public
//! root list holds; its certificate in this file makes the connection trusted.
//!
//! The file is PEM (any number of `-----BEGIN CERTIFICATE-----` blocks; other blocks, such as
//! keys, are skipped), or a single DER certificate. Read by the config loader, so that
//! `config check` and a reload reject a bad file before anything uses it, and by the daemon when
//! it builds its HTTP clients.

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// The certificates in `path`, in file order. The error names the file, and the certificate
/// (counted from 1) when one block is broken.
pub fn read(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// The certificates in a file's bytes (see [`read`]).
pub fn parse(bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    // DER starts with an ASN.1 SEQUENCE tag; PEM is text.
    if bytes.first() == Some(&0x30) {
        return Ok(vec![CertificateDer::from(bytes.to_vec())]);
    }
    let mut certificates = Vec::new();
    for (n, cert) in CertificateDer::pem_slice_iter(bytes).enumerate() {
        let cert = cert.map_err(|e| format!("certificate {}: {e}", n + 1))?;
        certificates.push(cert);
    }
    if certificates.is_empty() {
        return Err(
            "holds no certificate (expected PEM blocks starting with -----BEGIN CERTIFICATE-----, \
             or one DER certificate)"
                .to_string(),
        );
    }
    Ok(certificates)
}

/// Where a `caFile` value points: `~/` is the home directory, and a relative path is relative
/// to the config file's directory (not to wherever the proxy happens to be started).
pub fn resolve(value: &str, config_file: &Path) -> PathBuf {
    if let Some(rest) = value.strip_prefix("~/") {
        if let Some(home) = crate::paths::home_dir() {
            return home.join(rest);
        }
    }
    let path = Path::new(value);
    if path.is_absolute() {
        return path.to_path_buf();
    }
    config_file
        .parent()
        .map_or_else(|| path.to_path_buf(), |dir| dir.join(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two made-up "certificates" (the loader checks PEM framing; the daemon's TLS library checks
    /// the contents).
    const TWO: &str = "\
-----BEGIN CERTIFICATE-----
AQID
-----END CERTIFICATE-----
-----BEGIN PRIVATE KEY-----
BAUG
-----END PRIVATE KEY-----
-----BEGIN CERTIFICATE-----
BwgJ
-----END CERTIFICATE-----
";

    #[test]
    fn pem_certificates_are_read_in_order_and_other_blocks_skipped() {
        let certs = parse(TWO.as_bytes()).expect("two certificates");
        let bodies: Vec<&[u8]> = certs.iter().map(|c| c.as_ref()).collect();
        assert_eq!(bodies, [&[1u8, 2, 3][..], &[7, 8, 9][..]]);
    }

    #[test]
    fn a_der_file_is_one_certificate() {
        let certs = parse(&[0x30, 0x03, 0x02, 0x01, 0x05]).expect("DER");
        assert_eq!(certs.len(), 1);
        assert_eq!(certs[0].as_ref(), [0x30, 0x03, 0x02, 0x01, 0x05]);
    }

    #[test]
    fn a_file_without_certificates_or_with_a_broken_one_is_refused_with_a_reason() {
        let none = parse(b"just some text\n").expect_err("no certificate");
        assert!(none.contains("holds no certificate"), "{none}");
        let key_only = parse(b"-----BEGIN PRIVATE KEY-----\nAQID\n-----END PRIVATE KEY-----\n")
            .expect_err("a key is not a certificate");
        assert!(key_only.contains("holds no certificate"), "{key_only}");
        let broken = format!("{TWO}-----BEGIN CERTIFICATE-----\nAQID\n");
        let e = parse(broken.as_bytes()).expect_err("unterminated third block");
        assert!(e.starts_with("certificate 3: "), "{e}");
        let bad_base64 = parse(b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n")
            .expect_err("bad base64");
        assert!(bad_base64.starts_with("certificate 1: "), "{bad_base64}");
    }

    #[test]
    fn read_names_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("corp-ca.pem");
        let e = read(&missing).expect_err("missing");
        assert!(
            e.starts_with("cannot read ") && e.contains("corp-ca.pem"),
            "{e}"
        );
        std::fs::write(&missing, "nothing").expect("write");
        let e = read(&missing).expect_err("no certificate");
        assert!(e.contains("corp-ca.pem: holds no certificate"), "{e}");
        std::fs::write(&missing, TWO).expect("write");
        assert_eq!(read(&missing).expect("read").len(), 2);
    }

    #[test]
    fn paths_resolve_against_the_config_files_directory() {
        let config = Path::new("/etc/neurolink/proxy-config.yaml");
        assert_eq!(
            resolve("corp.pem", config),
            Path::new("/etc/neurolink/corp.pem")
        );
        assert_eq!(resolve("/opt/ca.pem", config), Path::new("/opt/ca.pem"));
        if let Some(home) = crate::paths::home_dir() {
            assert_eq!(resolve("~/ca.pem", config), home.join("ca.pem"));
        }
    }
}
