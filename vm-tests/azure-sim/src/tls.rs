//! A throwaway CA generated per run and the vault's server certificate signed by it, so
//! clients verify TLS for real (against this CA) instead of turning verification off.

use std::sync::Arc;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

pub(crate) struct Pki {
    pub ca_pem: String,
    pub server_config: Arc<rustls::ServerConfig>,
}

/// Names the vault certificate always covers; `extra_sans` are added (IPs or DNS names).
const DEFAULT_SANS: &[&str] = &["127.0.0.1", "::1", "localhost", "*.vault.azure.net"];

pub(crate) fn generate(extra_sans: &[String]) -> anyhow::Result<Pki> {
    let ca_key = KeyPair::generate().context("cannot generate the CA key")?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())
        .context("cannot build the CA certificate parameters")?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "azure-sim test CA");
    ca_params
        .distinguished_name
        .push(DnType::OrganizationName, "canarie azure-sim");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .context("cannot self-sign the CA certificate")?;
    let issuer = Issuer::new(ca_params, ca_key);

    let sans: Vec<String> = DEFAULT_SANS
        .iter()
        .map(|s| s.to_string())
        .chain(extra_sans.iter().cloned())
        .collect();
    let mut params = CertificateParams::new(sans.clone()).with_context(|| {
        format!("a subject alternative name in {sans:?} is neither an IP address nor a DNS name")
    })?;
    params
        .distinguished_name
        .push(DnType::CommonName, "azure-sim vault");
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = KeyPair::generate().context("cannot generate the vault's TLS key")?;
    let server_cert = params
        .signed_by(&server_key, &issuer)
        .context("cannot sign the vault certificate with the CA")?;

    let chain: Vec<CertificateDer<'static>> =
        vec![server_cert.der().clone(), ca_cert.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("rustls rejected its default protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("rustls rejected the generated vault certificate")?;
    // The server speaks HTTP/1.1 only; say so in ALPN so clients never try h2.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Pki {
        ca_pem: ca_cert.pem(),
        server_config: Arc::new(config),
    })
}
