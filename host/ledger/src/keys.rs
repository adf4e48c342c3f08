//! The log's keys: generating a pair, and reading signer and verifier keys in Go's
//! note formats (`PRIVATE+KEY+<name>+<hash>+<base64>` and `<name>+<hash>+<base64>`).

use std::fmt;

use base64::prelude::*;
use signed_note::{
    SignerError, StandardSigner, StandardVerifier, Verifier as _, VerifierError, VerifierList,
};

/// Ed25519's algorithm byte in a note key, the only kind signed_note knows.
const ALG_ED25519: u8 = 1;

/// A freshly generated key pair, as text in Go's note formats.
#[derive(Clone)]
pub struct KeyPair {
    /// The signer key, `PRIVATE+KEY+<name>+<hash>+<base64>`: secret, for the ledger that signs.
    pub signer_key: String,
    /// The verifier key, `<name>+<hash>+<base64>`: public, for whoever checks the log.
    pub verifier_key: String,
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A key pair ends up in logs and panics; only its public half may.
        f.debug_struct("KeyPair")
            .field("signer_key", &"PRIVATE+KEY+<redacted>")
            .field("verifier_key", &self.verifier_key)
            .finish()
    }
}

/// Why a key could not be generated or read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key name must be non-empty and hold no spaces and no `+`.
    #[error("invalid key name {name:?}: a key name is non-empty, with no spaces and no '+'")]
    InvalidName {
        /// The name that was refused.
        name: String,
    },
    /// The text is not an Ed25519 signer key in Go's note format.
    #[error("not a signer key (PRIVATE+KEY+<name>+<hash>+<base64>, Ed25519): {reason}")]
    BadSigner {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The text is not an Ed25519 verifier key in Go's note format.
    #[error("not a verifier key (<name>+<hash>+<base64>, Ed25519): {reason}")]
    BadVerifier {
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Generates an Ed25519 key pair named `name` (by convention the log's origin) from the OS's RNG.
pub fn generate_key(name: &str) -> Result<KeyPair, KeyError> {
    if !signed_note::is_key_name_valid(name) {
        return Err(KeyError::InvalidName {
            name: name.to_string(),
        });
    }
    let (signer_key, verifier_key) = signed_note::generate_key(&mut rand_core::OsRng, name);
    Ok(KeyPair {
        signer_key,
        verifier_key,
    })
}

/// A parsed signer key: what signs the ledger's checkpoints.
#[derive(Clone)]
pub struct SigningKey {
    signer: StandardSigner,
    verifier: VerifierKey,
}

impl SigningKey {
    /// Parses a signer key (`PRIVATE+KEY+<name>+<hash>+<base64>`), ignoring surrounding whitespace.
    pub fn parse(text: &str) -> Result<SigningKey, KeyError> {
        let text = text.trim();
        let signer = StandardSigner::new(text).map_err(|e| KeyError::BadSigner {
            reason: match e {
                SignerError::Format => "malformed",
                SignerError::Alg => "not an Ed25519 key",
                SignerError::Id => "its key hash does not match the key",
            },
        })?;
        // StandardSigner keeps its public half to itself, so the verifier key is
        // derived here from the same text it has just accepted.
        // PRIVATE+KEY+<name>+<hash>+<base64>: the base64 may itself hold a '+'.
        let key = text
            .splitn(5, '+')
            .nth(4)
            .and_then(|key| BASE64_STANDARD.decode(key).ok())
            .ok_or(KeyError::BadSigner {
                reason: "malformed",
            })?;
        let seed: [u8; 32] = match key.split_first() {
            Some((&ALG_ED25519, seed)) => seed.try_into().map_err(|_| KeyError::BadSigner {
                reason: "malformed",
            })?,
            _ => {
                return Err(KeyError::BadSigner {
                    reason: "not an Ed25519 key",
                });
            }
        };
        let public = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
        let name = signed_note::Signer::name(&signer);
        let verifier = VerifierKey::parse(&signed_note::new_ed25519_verifier_key(name, &public))?;
        Ok(SigningKey { signer, verifier })
    }

    /// The key's name: the default origin of the checkpoints it signs.
    pub fn name(&self) -> &str {
        self.verifier.name()
    }

    /// The matching verifier key, to hand to whoever checks the log.
    pub fn verifier_key(&self) -> &VerifierKey {
        &self.verifier
    }

    pub(crate) fn signer(&self) -> &StandardSigner {
        &self.signer
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("verifier_key", &self.verifier.text)
            .finish_non_exhaustive()
    }
}

/// A parsed verifier key: what checks a checkpoint's signature.
#[derive(Clone)]
pub struct VerifierKey {
    verifier: StandardVerifier,
    text: String,
}

impl VerifierKey {
    /// Parses a verifier key (`<name>+<hash>+<base64>`), ignoring surrounding whitespace.
    pub fn parse(text: &str) -> Result<VerifierKey, KeyError> {
        let text = text.trim();
        let verifier = StandardVerifier::new(text).map_err(|e| KeyError::BadVerifier {
            reason: match e {
                VerifierError::Format => "malformed",
                VerifierError::Alg => "not an Ed25519 key",
                VerifierError::Id => "its key hash does not match the key",
            },
        })?;
        Ok(VerifierKey {
            verifier,
            text: text.to_string(),
        })
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        self.verifier.name()
    }

    /// The key in Go's note format, `<name>+<hash>+<base64>`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The key as the one known verifier signed_note checks notes against.
    pub(crate) fn verifiers(&self) -> VerifierList {
        VerifierList::new(vec![Box::new(self.verifier.clone())])
    }
}

impl fmt::Debug for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("VerifierKey").field(&self.text).finish()
    }
}

impl fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}
