//! HTTPS on the listener: rustls (ring provider), HTTP/2 and HTTP/1.1 offered by
//! ALPN. The certificate chain and key are files the operator renews; SIGHUP re-reads
//! them and new connections get the new certificate while open ones keep theirs. A
//! reload that fails keeps the certificate in force, so a half-written file never
//! takes HTTPS down.

use std::path::PathBuf;

use axum_server::tls_rustls::RustlsConfig;

use crate::config::TlsFiles;

/// Why the certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
#[error("TLS certificate {} with key {}: {source}", cert.display(), key.display())]
pub struct TlsError {
    /// The certificate chain file.
    pub cert: PathBuf,
    /// The private key file.
    pub key: PathBuf,
    /// What went wrong reading or parsing them.
    pub source: std::io::Error,
}

/// The listener's TLS settings, and where they come from.
#[derive(Clone)]
pub struct Tls {
    files: TlsFiles,
    config: RustlsConfig,
}

impl Tls {
    /// Reads the certificate chain and key; errors name both files.
    pub async fn load(files: TlsFiles) -> Result<Tls, TlsError> {
        let config = RustlsConfig::from_pem_file(&files.cert, &files.key)
            .await
            .map_err(|source| error(&files, source))?;
        Ok(Tls { files, config })
    }

    /// Re-reads the files; new connections use them. On error the old ones stay.
    pub async fn reload(&self) -> Result<(), TlsError> {
        self.config
            .reload_from_pem_file(&self.files.cert, &self.files.key)
            .await
            .map_err(|source| error(&self.files, source))
    }

    /// What the server accepts connections with.
    pub fn config(&self) -> RustlsConfig {
        self.config.clone()
    }

    /// The files it reads.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }
}

fn error(files: &TlsFiles, source: std::io::Error) -> TlsError {
    TlsError {
        cert: files.cert.clone(),
        key: files.key.clone(),
        source,
    }
}
