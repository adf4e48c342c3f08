//! Who may use which route: named credentials, each with a role and a scope.
//!
//! A request presents a secret as `Authorization: Bearer SECRET`. The host keeps only
//! the SHA-256 of each secret and compares digests in constant time, against every
//! credential, so neither the time taken nor the order of the list says which one
//! nearly matched. One digest per request is the whole cost of a wrong secret.
//!
//! Deny by default: once any credential is configured, every route but the probes
//! needs one, with a role that allows what the route does, scoped to the tenant it
//! touches. A credential scoped to another tenant gets 404, as if the tenant did not
//! exist, so tenants cannot be discovered.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::request_limits::RequestLimits;

/// What a credential may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Write operations.
    Ingest,
    /// Status, metrics, operation look-ups.
    Read,
    /// Dead letters, replay, purge, tenants; includes `Ingest` and `Read`.
    Admin,
}

impl Role {
    /// Parses `ingest`, `read` or `admin`.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "ingest" => Some(Role::Ingest),
            "read" => Some(Role::Read),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// Whether a credential of this role may do what `needed` names.
    pub fn allows(self, needed: Role) -> bool {
        self == Role::Admin || self == needed
    }

    /// Its name in the configuration and in logs.
    pub fn name(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Read => "read",
            Role::Admin => "admin",
        }
    }
}

/// Which tenants a credential reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every tenant, and the host's own routes (tenants, reload).
    Host,
    /// One tenant's routes.
    Tenant(String),
}

/// One credential as configured, with its secret already hashed.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// Shown in logs and audit events; never the secret.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// Where.
    pub scope: Scope,
    /// What one of its requests may carry (the tenant's limits apply too).
    pub limits: RequestLimits,
    digest: [u8; 32],
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("scope", &self.scope)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Credential {
    /// A credential for `secret`, which is hashed at once and not kept.
    pub fn new(name: impl Into<String>, role: Role, scope: Scope, secret: &str) -> Credential {
        Credential {
            name: name.into(),
            role,
            scope,
            limits: RequestLimits::default(),
            digest: Sha256::digest(secret.as_bytes()).into(),
        }
    }

    /// The same credential with its own request limits.
    pub fn with_limits(mut self, limits: RequestLimits) -> Credential {
        self.limits = limits;
        self
    }

    /// The SHA-256 of its secret: what a console session remembers instead of the secret.
    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }

    /// Whether it reaches `tenant` (`None`: a host route).
    pub fn reaches(&self, tenant: Option<&str>) -> bool {
        match (&self.scope, tenant) {
            (Scope::Host, _) => true,
            (Scope::Tenant(own), Some(t)) => own == t,
            (Scope::Tenant(_), None) => false,
        }
    }
}

/// Why a request was refused; nothing was done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// No credential, or one that matches none configured: 401.
    Unauthenticated,
    /// A credential whose scope does not reach the tenant: 404, as for a tenant that
    /// does not exist.
    OtherTenant,
    /// A credential reaching the tenant without the role: 403.
    Forbidden {
        /// The credential's name.
        name: String,
        /// The role the route needs.
        needed: Role,
    },
}

/// Every credential of the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    all: Vec<Credential>,
}

impl Credentials {
    /// The host's credentials.
    pub fn new(all: Vec<Credential>) -> Credentials {
        Credentials { all }
    }

    /// Whether none is configured: the API is open (to loopback callers only, unless
    /// the operator says otherwise).
    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// The credential whose secret is `secret`, if any. Every digest is compared, in
    /// constant time.
    pub fn identify(&self, secret: &str) -> Option<&Credential> {
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let mut found = None;
        for c in &self.all {
            if bool::from(c.digest.ct_eq(&digest)) && found.is_none() {
                found = Some(c);
            }
        }
        found
    }

    /// The credential whose secret has `digest`, if it is still configured.
    pub fn by_digest(&self, digest: &[u8; 32]) -> Option<&Credential> {
        self.all.iter().find(|c| bool::from(c.digest.ct_eq(digest)))
    }

    /// Decides a request: `bearer` is the presented secret, `needed` the route's role,
    /// `tenant` the tenant it touches (`None`: a host route). `Ok(None)` when no
    /// credential is configured at all.
    pub fn check(
        &self,
        bearer: Option<&str>,
        needed: Role,
        tenant: Option<&str>,
    ) -> Result<Option<&Credential>, Refused> {
        if self.is_empty() {
            return Ok(None);
        }
        let credential = bearer
            .and_then(|secret| self.identify(secret))
            .ok_or(Refused::Unauthenticated)?;
        if !credential.reaches(tenant) {
            return Err(match tenant {
                Some(_) => Refused::OtherTenant,
                None => Refused::Forbidden {
                    name: credential.name.clone(),
                    needed,
                },
            });
        }
        if !credential.role.allows(needed) {
            return Err(Refused::Forbidden {
                name: credential.name.clone(),
                needed,
            });
        }
        Ok(Some(credential))
    }

    /// The tenants among `ids` that `credential` may read (all of them without one).
    pub fn visible<'a>(&self, credential: Option<&Credential>, ids: &'a [String]) -> Vec<&'a str> {
        ids.iter()
            .map(String::as_str)
            .filter(|id| credential.is_none_or(|c| c.reaches(Some(id))))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Credentials {
        Credentials::new(vec![
            Credential::new("ops", Role::Admin, Scope::Host, "root-secret"),
            Credential::new(
                "acme-app",
                Role::Ingest,
                Scope::Tenant("acme".into()),
                "acme-in",
            ),
            Credential::new(
                "acme-dash",
                Role::Read,
                Scope::Tenant("acme".into()),
                "acme-read",
            ),
            Credential::new(
                "globex-app",
                Role::Ingest,
                Scope::Tenant("globex".into()),
                "gx-in",
            ),
        ])
    }

    #[test]
    fn without_credentials_everything_is_open() {
        let none = Credentials::default();
        assert_eq!(none.check(None, Role::Admin, None), Ok(None));
    }

    #[test]
    fn a_missing_or_wrong_secret_is_unauthenticated() {
        let c = host();
        for bearer in [None, Some(""), Some("acme-in "), Some("ACME-IN")] {
            assert_eq!(
                c.check(bearer, Role::Ingest, Some("acme")),
                Err(Refused::Unauthenticated),
                "{bearer:?}"
            );
        }
    }

    #[test]
    fn each_role_does_its_own_job_and_admin_does_all() {
        let c = host();
        let who = |secret, needed| {
            c.check(Some(secret), needed, Some("acme"))
                .map(|c| c.map(|c| c.name.clone()))
        };
        assert_eq!(who("acme-in", Role::Ingest), Ok(Some("acme-app".into())));
        assert!(matches!(
            who("acme-in", Role::Read),
            Err(Refused::Forbidden { .. })
        ));
        assert_eq!(who("acme-read", Role::Read), Ok(Some("acme-dash".into())));
        assert!(matches!(
            who("acme-read", Role::Ingest),
            Err(Refused::Forbidden { .. })
        ));
        assert!(matches!(
            who("acme-read", Role::Admin),
            Err(Refused::Forbidden { .. })
        ));
        for needed in [Role::Ingest, Role::Read, Role::Admin] {
            assert_eq!(who("root-secret", needed), Ok(Some("ops".into())));
        }
    }

    #[test]
    fn another_tenants_credential_finds_no_tenant_and_no_host_route() {
        let c = host();
        assert_eq!(
            c.check(Some("gx-in"), Role::Ingest, Some("acme")),
            Err(Refused::OtherTenant)
        );
        assert!(matches!(
            c.check(Some("acme-in"), Role::Admin, None),
            Err(Refused::Forbidden { .. })
        ));
    }

    #[test]
    fn a_credential_sees_only_its_tenants() {
        let c = host();
        let ids = vec!["acme".to_string(), "globex".to_string()];
        let dash = c.identify("acme-read");
        assert_eq!(c.visible(dash, &ids), ["acme"]);
        assert_eq!(
            c.visible(c.identify("root-secret"), &ids),
            ["acme", "globex"]
        );
        assert_eq!(c.visible(None, &ids), ["acme", "globex"]);
    }

    #[test]
    fn the_secret_is_not_kept_or_shown() {
        let c = Credential::new("x", Role::Read, Scope::Host, "hunter2");
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
