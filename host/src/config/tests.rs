//! The configuration file's specification, case by case.

use super::*;
use trustlog_guest::model::{Backoff, DEFAULT_CURSOR_KEY};

const BASE_DIR: &str = "/etc/trustlog";

/// A tenant with only the required keys.
const ACME: &str = r#"
[[tenant]]
id = "acme"
db = "sqlite://acme.db"
publisher = "ledger://acme.ledger"
"#;

fn env(name: &str) -> Option<String> {
    match name {
        "HOST_TOKEN" => Some("host-from-env".into()),
        "ACME_TOKEN" => Some("acme-from-env".into()),
        "ACME_DB" => Some("postgres://u:pw@db/app".into()),
        _ => None,
    }
}

fn parse(text: &str) -> Result<HostConfig, ConfigError> {
    parse_with_env(text, Path::new(BASE_DIR), &env)
}

fn error(text: &str) -> ConfigError {
    match parse(text) {
        Ok(config) => panic!("accepted, expected an error: {config:?}"),
        Err(e) => e,
    }
}

fn only_tenant(text: &str) -> TenantSpec {
    let mut config = parse(text).unwrap();
    assert_eq!(config.tenants.len(), 1);
    config.tenants.remove(0)
}

/// A second tenant, to show errors name tenant[1].
const BETA: &str = r#"
[[tenant]]
id = "beta"
db = "sqlite://beta.db"
publisher = "ledger://beta.ledger"
"#;

/// ACME, then BETA with `extra` lines.
fn beta_with(extra: &str) -> String {
    format!("{ACME}{BETA}{extra}\n")
}

fn builtin() -> Settings {
    Settings::default()
}

#[test]
fn a_full_example_parses_to_the_expected_specs() {
    let config = parse(
        r#"
listen = "0.0.0.0:9000"
admin_token = "host-secret"
max_tenants = 10
shared_pool_size = 7

[defaults]
batch_size = 500
poll_interval = "5s"

[[tenant]]
id = "acme"
db = "postgres://127.0.0.1/app"
schema = "acme"
publisher = "nats://127.0.0.1:4222?subject=trustlog.acme"
strategy = "trustlog-only"
batch_size = 200
pipeline_depth = 5
cursor_key = "acme_scan"
poll_interval = "2s"
retry_interval = "30s"
sweep_interval = "5m"
watch_interval = "20ms"
catch_up_window = "30s"
lease_ttl = "3s"
backoff_base = "10s"
backoff_factor = 3
backoff_cap = "1h"
max_retries = 7
poll_only = true
admin_token = "acme-secret"
component = "guests/acme-v2.wasm"
[tenant.limits]
memory = "32MiB"
cpu_per_call = "5ms"
table_elements = 2000
log_lines_per_sec = 10
restart_after = "250ms"

[[tenant]]
id = "beta_2"
db = "sqlite://beta.db"
publisher = "ledger://beta.ledger"
"#,
    )
    .unwrap();
    assert_eq!(config.listen.as_deref(), Some("0.0.0.0:9000"));
    assert_eq!(config.admin_token.as_deref(), Some("host-secret"));
    assert_eq!(config.max_tenants, 10);
    assert_eq!(config.shared_pool_size, 7);
    let acme = TenantSpec {
        id: "acme".into(),
        db: "postgres://127.0.0.1/app?options=-c%20search_path%3Dacme".into(),
        publisher: "nats://127.0.0.1:4222?subject=trustlog.acme".into(),
        engine: Config {
            cursor_key: "acme_scan".into(),
            batch_size: 200,
            backoff: Backoff {
                base_micros: 10_000_000,
                factor: 3,
                cap_micros: 3_600_000_000,
                max_retries: 7,
            },
            default_strategy: Strategy::TrustlogOnly,
            catch_up_window_micros: 30_000_000,
            pipeline_depth: 5,
        },
        intervals: Intervals {
            poll: Duration::from_secs(2),
            retry: Duration::from_secs(30),
            sweep: Duration::from_secs(300),
            watch: Duration::from_millis(20),
            lease_ttl: Duration::from_secs(3),
        },
        limits: Limits {
            memory_bytes: 32 << 20,
            cpu_per_call: Duration::from_millis(5),
            table_elements: 2000,
            log_lines_per_sec: 10,
            requests: RequestLimits::default(),
            restart_after: Some(Duration::from_millis(250)),
        },
        admin_token: Some("acme-secret".into()),
        component: Some(PathBuf::from("/etc/trustlog/guests/acme-v2.wasm")),
        poll_only: true,
        schema: Some(SharedSchema {
            server: "postgres://127.0.0.1/app".into(),
            name: "acme".into(),
        }),
    };
    let mut beta_engine = builtin().engine;
    beta_engine.batch_size = 500;
    let beta = TenantSpec {
        id: "beta_2".into(),
        db: "sqlite://beta.db".into(),
        publisher: "ledger://beta.ledger".into(),
        engine: beta_engine,
        intervals: Intervals {
            poll: Duration::from_secs(5),
            ..builtin().intervals
        },
        limits: Limits::default(),
        admin_token: None,
        component: None,
        poll_only: false,
        schema: None,
    };
    assert_eq!(config.tenants, vec![acme, beta]);
}

#[test]
fn a_minimal_file_takes_the_command_lines_defaults() {
    let config = parse(ACME).unwrap();
    assert_eq!(config.listen, None);
    assert_eq!(config.admin_token, None);
    assert_eq!(config.max_tenants, DEFAULT_MAX_TENANTS);
    let acme = &config.tenants[0];
    assert_eq!(acme.engine.cursor_key, DEFAULT_CURSOR_KEY);
    assert_eq!(acme.engine.batch_size, 100);
    assert_eq!(acme.engine.default_strategy, Strategy::DbAndTrustlog);
    assert_eq!(
        acme.engine.backoff,
        Backoff {
            base_micros: 60_000_000,
            factor: 2,
            cap_micros: 16 * 60_000_000,
            max_retries: 5,
        }
    );
    assert_eq!(acme.intervals, Intervals::default());
    assert_eq!(acme.limits, Limits::default());
    assert!(!acme.poll_only);
}

#[test]
fn defaults_apply_to_every_tenant_and_a_tenant_overrides_them_key_by_key() {
    let config = parse(&format!(
            r#"
[defaults]
strategy = "db-only"
batch_size = 500
retry_interval = "1m"
poll_only = true
[defaults.limits]
memory = "128MiB"
cpu_per_call = "42ms"
{}"#,
            beta_with(
                "batch_size = 7\npoll_only = false\n[tenant.limits]\ncpu_per_call = \"99ms\"\nrestart_after = \"never\""
            )
        ))
        .unwrap();
    let [acme, beta] = &config.tenants[..] else {
        panic!("two tenants expected: {config:?}")
    };
    // acme sets nothing: all from [defaults].
    assert_eq!(acme.engine.default_strategy, Strategy::DbOnly);
    assert_eq!(acme.engine.batch_size, 500);
    assert_eq!(acme.intervals.retry, Duration::from_secs(60));
    assert!(acme.poll_only);
    assert_eq!(acme.limits.memory_bytes, 128 << 20);
    assert_eq!(acme.limits.cpu_per_call, Duration::from_millis(42));
    // beta overrides some keys and inherits the rest, limits included.
    assert_eq!(beta.engine.default_strategy, Strategy::DbOnly);
    assert_eq!(beta.engine.batch_size, 7);
    assert!(!beta.poll_only);
    assert_eq!(beta.limits.memory_bytes, 128 << 20);
    assert_eq!(beta.limits.cpu_per_call, Duration::from_millis(99));
    assert_eq!(beta.limits.table_elements, Limits::default().table_elements);
    assert_eq!(acme.limits.restart_after, Limits::default().restart_after);
    assert_eq!(beta.limits.restart_after, None, "never: stays stopped");
}

#[test]
fn each_invalid_value_is_refused_naming_its_field() {
    type Check = fn(&ConfigError) -> bool;
    let cases: &[(&str, &str, Check)] = &[
        ("batch_size = 0", "tenant[1].batch_size", |e| {
            matches!(e, ConfigError::OutOfRange { value: 0, .. })
        }),
        ("batch_size = 10001", "tenant[1].batch_size", |e| {
            matches!(e, ConfigError::OutOfRange { max: 10_000, .. })
        }),
        ("batch_size = -1", "tenant[1].batch_size", |e| {
            matches!(e, ConfigError::OutOfRange { .. })
        }),
        ("pipeline_depth = 0", "tenant[1].pipeline_depth", |e| {
            matches!(e, ConfigError::OutOfRange { value: 0, .. })
        }),
        ("pipeline_depth = 9", "tenant[1].pipeline_depth", |e| {
            matches!(e, ConfigError::OutOfRange { max: 8, .. })
        }),
        ("backoff_factor = 0", "tenant[1].backoff_factor", |e| {
            matches!(e, ConfigError::OutOfRange { .. })
        }),
        ("max_retries = -3", "tenant[1].max_retries", |e| {
            matches!(e, ConfigError::OutOfRange { .. })
        }),
        (
            "poll_interval = \"10 parsecs\"",
            "tenant[1].poll_interval",
            |e| matches!(e, ConfigError::BadDuration { .. }),
        ),
        ("sweep_interval = \"0s\"", "tenant[1].sweep_interval", |e| {
            matches!(e, ConfigError::BadDuration { .. })
        }),
        ("backoff_cap = \"soon\"", "tenant[1].backoff_cap", |e| {
            matches!(e, ConfigError::BadDuration { .. })
        }),
        (
            "watch_interval = \"0ms\"",
            "tenant[1].watch_interval",
            |e| matches!(e, ConfigError::BadDuration { .. }),
        ),
        ("lease_ttl = \"500ms\"", "tenant[1].lease_ttl", |e| {
            matches!(e, ConfigError::BadDuration { .. })
        }),
        (
            "catch_up_window = \"a while\"",
            "tenant[1].catch_up_window",
            |e| matches!(e, ConfigError::BadDuration { .. }),
        ),
        ("strategy = \"db-or-not\"", "tenant[1].strategy", |e| {
            matches!(e, ConfigError::BadStrategy { .. })
        }),
        ("cursor_key = \"\"", "tenant[1].cursor_key", |e| {
            matches!(e, ConfigError::Empty { .. })
        }),
        ("admin_token = \"\"", "tenant[1].admin_token", |e| {
            matches!(e, ConfigError::Empty { .. })
        }),
        (
            "[tenant.limits]\nmemory = \"512KiB\"",
            "tenant[1].limits.memory",
            |e| matches!(e, ConfigError::BadSize { .. }),
        ),
        (
            "[tenant.limits]\nmemory = \"lots\"",
            "tenant[1].limits.memory",
            |e| matches!(e, ConfigError::BadSize { .. }),
        ),
        (
            "[tenant.limits]\nmemory = \"64MB\"",
            "tenant[1].limits.memory",
            |e| matches!(e, ConfigError::BadSize { .. }),
        ),
        (
            "[tenant.limits]\nmemory = true",
            "tenant[1].limits.memory",
            |e| matches!(e, ConfigError::BadSize { .. }),
        ),
        (
            "[tenant.limits]\ncpu_per_call = \"0s\"",
            "tenant[1].limits.cpu_per_call",
            |e| matches!(e, ConfigError::BadDuration { .. }),
        ),
        (
            "[tenant.limits]\nrestart_after = \"0s\"",
            "tenant[1].limits.restart_after",
            |e| matches!(e, ConfigError::BadDuration { .. }),
        ),
    ];
    for (line, field, is_expected_kind) in cases {
        let e = error(&beta_with(line));
        assert_eq!(e.field(), Some(*field), "{line}: {e}");
        assert!(is_expected_kind(&e), "{line}: wrong kind {e:?}");
        assert!(e.to_string().starts_with(field), "{line}: {e}");
    }
}

#[test]
fn an_invalid_default_is_named_under_defaults() {
    let e = error(&format!("[defaults]\nbatch_size = 0\n{ACME}"));
    assert_eq!(e.field(), Some("defaults.batch_size"));
    let e = error(&format!(
        "[defaults]\n[defaults.limits]\nmemory = 1024\n{ACME}"
    ));
    assert_eq!(e.field(), Some("defaults.limits.memory"));
    assert!(e.to_string().contains("1MiB"), "{e}");
}

#[test]
fn unknown_keys_are_refused_with_their_line_and_column() {
    let cases = [
        (beta_with("batchsize = 5"), "batchsize"),
        (beta_with("[tenant.limits]\nmemroy = \"2MiB\""), "memroy"),
        (format!("listne = \"x\"\n{ACME}"), "listne"),
        // Identity keys belong to a tenant, not to [defaults].
        (format!("[defaults]\nid = \"x\"\n{ACME}"), "id"),
    ];
    for (text, key) in cases {
        let line = 1 + text
            .lines()
            .position(|l| l.starts_with(&format!("{key} =")))
            .unwrap();
        let e = error(&text);
        let message = e.to_string();
        assert!(matches!(e, ConfigError::Toml(_)), "{key}: {e:?}");
        assert!(
            message.contains(&format!("unknown field `{key}`")),
            "{message}"
        );
        assert!(message.contains(&format!("line {line},")), "{message}");
    }
}

#[test]
fn toml_syntax_and_type_errors_keep_tomls_line_and_column() {
    let e = error(&format!("{ACME}batch_size = = 3\n"));
    assert!(matches!(e, ConfigError::Toml(_)), "{e:?}");
    assert!(e.to_string().contains("line 6, column"), "{e}");
    let e = error(&format!("{ACME}batch_size = \"many\"\n"));
    assert!(e.to_string().contains("line 6, column"), "{e}");
}

#[test]
fn a_missing_required_key_is_named() {
    for key in ["id", "db", "publisher"] {
        let text = format!("{ACME}{}", BETA.replace(&format!("\n{key} = "), "\n# "));
        let e = error(&text);
        assert!(matches!(e, ConfigError::Missing { .. }), "{e:?}");
        assert_eq!(e.field(), Some(format!("tenant[1].{key}").as_str()));
    }
}

#[test]
fn a_tenant_id_must_fit_urls_and_metric_labels() {
    for bad in ["", "Acme", "a.b", "a b", "ünï", &"x".repeat(65)] {
        let e = error(&ACME.replace("\"acme\"", &format!("{bad:?}")));
        assert!(matches!(e, ConfigError::BadId { .. }), "{bad:?}: {e:?}");
        assert_eq!(e.field(), Some("tenant[0].id"));
    }
    only_tenant(&ACME.replace("\"acme\"", &format!("{:?}", "a-b_9".repeat(12))));
}

#[test]
fn duplicate_tenant_ids_are_refused_naming_both() {
    let e = error(&format!("{ACME}{ACME}"));
    assert!(
        matches!(&e, ConfigError::DuplicateId { id, first: 0, .. } if id == "acme"),
        "{e:?}"
    );
    assert_eq!(e.field(), Some("tenant[1].id"));
    assert!(e.to_string().contains("tenant[0]"), "{e}");
}

#[test]
fn a_file_without_tenants_is_refused() {
    let e = error("listen = \"127.0.0.1:8080\"\n");
    assert!(matches!(e, ConfigError::NoTenants), "{e:?}");
}

#[test]
fn max_tenants_must_cover_the_tenants_defined() {
    let e = error(&format!("max_tenants = 1\n{}", beta_with("")));
    assert!(
        matches!(e, ConfigError::TooManyTenants { max: 1, count: 2 }),
        "{e:?}"
    );
    let e = error(&format!("max_tenants = 0\n{ACME}"));
    assert_eq!(e.field(), Some("max_tenants"));
    assert_eq!(
        parse(&format!("max_tenants = 1\n{ACME}"))
            .unwrap()
            .max_tenants,
        1
    );
}

fn with_db_and_schema(db: &str, schema: &str) -> String {
    ACME.replace("sqlite://acme.db", db)
        .replace("\npublisher", &format!("\nschema = {schema:?}\npublisher"))
}

#[test]
fn a_schema_becomes_the_postgres_search_path() {
    let cases = [
        (
            "postgres://u@h/app",
            "postgres://u@h/app?options=-c%20search_path%3Dacme",
        ),
        (
            "postgresql://u@h/app?sslmode=require",
            "postgresql://u@h/app?sslmode=require&options=-c%20search_path%3Dacme",
        ),
        (
            "postgres://u@h/app?",
            "postgres://u@h/app?options=-c%20search_path%3Dacme",
        ),
    ];
    for (db, expected) in cases {
        assert_eq!(only_tenant(&with_db_and_schema(db, "acme")).db, expected);
    }
    let e = error(&with_db_and_schema(
        "postgres://h/app?options=-c%20statement_timeout%3D5s",
        "acme",
    ));
    assert!(
        matches!(e, ConfigError::SchemaNotApplicable { .. }),
        "{e:?}"
    );
}

#[test]
fn a_schema_replaces_the_mysql_or_mariadb_database() {
    let cases = [
        ("mariadb://u:p@h:3306/app", "mariadb://u:p@h:3306/acme"),
        (
            "mysql://u@h/app?ssl-mode=DISABLED",
            "mysql://u@h/acme?ssl-mode=DISABLED",
        ),
        ("mysql://h:3306", "mysql://h:3306/acme"),
    ];
    for (db, expected) in cases {
        assert_eq!(only_tenant(&with_db_and_schema(db, "acme")).db, expected);
    }
}

#[test]
fn a_schema_is_refused_for_sqlite_and_must_be_a_plain_name() {
    let e = error(&with_db_and_schema("sqlite://acme.db", "acme"));
    assert!(
        matches!(e, ConfigError::SchemaNotApplicable { .. }),
        "{e:?}"
    );
    assert_eq!(e.field(), Some("tenant[0].schema"));
    for bad in ["", "Acme", "acme;drop", "a-b", &"s".repeat(64)] {
        let e = error(&with_db_and_schema("postgres://h/app", bad));
        assert!(matches!(e, ConfigError::BadSchema { .. }), "{bad:?}: {e:?}");
        assert_eq!(e.field(), Some("tenant[0].schema"));
    }
}

#[test]
fn a_relative_component_resolves_against_the_config_directory() {
    let with = |path: &str| {
        only_tenant(&format!("{ACME}component = {path:?}\n"))
            .component
            .unwrap()
    };
    assert_eq!(
        with("guests/acme.wasm"),
        Path::new("/etc/trustlog/guests/acme.wasm")
    );
    assert_eq!(with("/opt/acme.wasm"), Path::new("/opt/acme.wasm"));
    assert_eq!(only_tenant(ACME).component, None);
}

#[test]
fn env_values_are_read_from_the_environment() {
    let config = parse(&format!(
        "admin_token = \"env:HOST_TOKEN\"\n{}admin_token = \"env:ACME_TOKEN\"\n",
        ACME.replace("sqlite://acme.db", "env:ACME_DB")
    ))
    .unwrap();
    assert_eq!(config.admin_token.as_deref(), Some("host-from-env"));
    let acme = &config.tenants[0];
    assert_eq!(acme.admin_token.as_deref(), Some("acme-from-env"));
    assert_eq!(acme.db, "postgres://u:pw@db/app");
}

#[test]
fn an_unset_env_variable_is_refused_naming_the_field() {
    let e = error(&format!("{ACME}admin_token = \"env:NOT_SET\"\n"));
    assert!(
        matches!(&e, ConfigError::MissingEnv { var, .. } if var == "NOT_SET"),
        "{e:?}"
    );
    assert_eq!(e.field(), Some("tenant[0].admin_token"));
    let e = error(&format!("admin_token = \"env:NOT_SET\"\n{ACME}"));
    assert_eq!(e.field(), Some("admin_token"));
}

#[test]
fn debug_hides_tokens_and_url_passwords() {
    let config = parse(&format!(
        "admin_token = \"host-secret\"\n{}admin_token = \"acme-secret\"\n",
        ACME.replace("sqlite://acme.db", "postgres://u:db-secret@h/app")
    ))
    .unwrap();
    let shown = format!("{config:?}");
    for secret in ["host-secret", "acme-secret", "db-secret"] {
        assert!(!shown.contains(secret), "{secret} shown: {shown}");
    }
    assert!(shown.contains(r#"admin_token: Some("***")"#), "{shown}");
    assert!(shown.contains("acme"), "{shown}");
}

#[test]
fn memory_sizes_take_binary_units_or_bytes() {
    assert_eq!(parse_size("64MiB"), Ok(64 << 20));
    assert_eq!(parse_size("512 KiB"), Ok(512 << 10));
    assert_eq!(parse_size("2GiB"), Ok(2 << 30));
    assert_eq!(parse_size("1048576"), Ok(1 << 20));
    assert_eq!(parse_size("1048576B"), Ok(1 << 20));
    for bad in [
        "",
        "MiB",
        "1.5GiB",
        "64MB",
        "64mib",
        "99999999999999999999GiB",
    ] {
        assert!(parse_size(bad).is_err(), "{bad:?} accepted");
    }
    let acme = only_tenant(&format!("{ACME}[tenant.limits]\nmemory = 2097152\n"));
    assert_eq!(acme.limits.memory_bytes, 2 << 20);
}

#[test]
fn a_tenant_from_json_takes_the_same_keys_with_built_in_defaults() {
    let value = serde_json::json!({
        "db": "postgres://h/app",
        "schema": "acme",
        "publisher": "ledger://acme.ledger",
        "batch_size": 50,
        "component": "acme.wasm",
        "limits": {"memory": "8MiB"},
    });
    let acme = tenant_from_json("acme", value, Path::new(BASE_DIR)).unwrap();
    assert_eq!(acme.id, "acme");
    assert_eq!(acme.db, "postgres://h/app?options=-c%20search_path%3Dacme");
    assert_eq!(acme.engine.batch_size, 50);
    assert_eq!(acme.intervals, builtin().intervals);
    assert_eq!(acme.limits.memory_bytes, 8 << 20);
    assert_eq!(
        acme.component.as_deref(),
        Some(Path::new("/etc/trustlog/acme.wasm"))
    );
}

#[test]
fn a_tenant_from_json_is_validated_like_the_file() {
    let base = || serde_json::json!({"db": "sqlite://a.db", "publisher": "ledger://a.ledger"});
    let with = |key: &str, value: serde_json::Value| {
        let mut body = base();
        body[key] = value;
        tenant_from_json("acme", body, Path::new(BASE_DIR)).unwrap_err()
    };
    assert_eq!(with("batch_size", 0.into()).field(), Some("batch_size"));
    let e = with("id", "other".into());
    assert!(matches!(e, ConfigError::IdMismatch { .. }), "{e:?}");
    // The environment is the host's: an API caller may not read it.
    let e = with("admin_token", "env:HOME".into());
    assert!(matches!(e, ConfigError::EnvNotAllowed { .. }), "{e:?}");
    assert_eq!(e.field(), Some("admin_token"));
    let e = with("batchsize", 5.into());
    assert!(
        matches!(&e, ConfigError::Json(m) if m.contains("batchsize")),
        "{e:?}"
    );
    let e = tenant_from_json("Bad!", base(), Path::new(BASE_DIR)).unwrap_err();
    assert!(matches!(e, ConfigError::BadId { .. }), "{e:?}");
    let e = tenant_from_json(
        "acme",
        serde_json::json!({"db": "sqlite://a.db"}),
        Path::new(BASE_DIR),
    )
    .unwrap_err();
    assert_eq!(e.field(), Some("publisher"));
}

#[test]
fn load_reads_the_file_and_names_it_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("host.toml");
    std::fs::write(&path, format!("{ACME}component = \"acme.wasm\"\n")).unwrap();
    let config = HostConfig::load(&path).unwrap();
    assert_eq!(
        config.tenants[0].component.as_deref(),
        Some(dir.path().join("acme.wasm").as_path())
    );

    std::fs::write(&path, format!("{ACME}batch_size = 0\n")).unwrap();
    let e = HostConfig::load(&path).unwrap_err();
    let message = e.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("tenant[0].batch_size"), "{message}");
    assert_eq!(e.field(), Some("tenant[0].batch_size"));
    assert!(matches!(e.inner(), ConfigError::OutOfRange { .. }));

    let missing = dir.path().join("absent.toml");
    let e = HostConfig::load(&missing).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }), "{e:?}");
    assert!(e.to_string().contains("absent.toml"), "{e}");
}

#[test]
fn credentials_name_a_role_a_tenant_or_the_host_and_a_secret_kept_hashed() {
    let config = parse(&format!(
        "{ACME}[[credential]]\nname = \"acme-app\"\nrole = \"ingest\"\ntenant = \"acme\"\n\
             secret = \"0123456789abcdef\"\n\
             [[credential]]\nname = \"ops\"\nrole = \"admin\"\nsecret = \"env:ACME_DB\"\n"
    ))
    .unwrap();
    let [app, ops] = &config.credentials[..] else {
        panic!("{:?}", config.credentials)
    };
    assert_eq!(
        (app.role, &app.scope),
        (Role::Ingest, &Scope::Tenant("acme".into()))
    );
    assert_eq!((ops.role, &ops.scope), (Role::Admin, &Scope::Host));
    let shown = format!("{config:?}");
    assert!(!shown.contains("0123456789abcdef"), "{shown}");
}

#[test]
fn a_credential_with_a_bad_role_tenant_secret_or_name_is_refused_naming_the_field() {
    let with = |body: &str| error(&format!("{ACME}[[credential]]\n{body}\n"));
    let good_secret = "secret = \"0123456789abcdef\"";
    for (body, field) in [
        (
            format!("name = \"x\"\nrole = \"root\"\n{good_secret}"),
            "credential[0].role",
        ),
        (
            format!("name = \"x\"\nrole = \"read\"\ntenant = \"globex\"\n{good_secret}"),
            "credential[0].tenant",
        ),
        (
            "name = \"x\"\nrole = \"read\"\nsecret = \"short\"".to_string(),
            "credential[0].secret",
        ),
        (
            format!("role = \"read\"\n{good_secret}"),
            "credential[0].name",
        ),
        (
            "name = \"x\"\nrole = \"read\"\nsecret = \"env:NOT_SET\"".to_string(),
            "credential[0].secret",
        ),
    ] {
        assert_eq!(with(&body).field(), Some(field), "{body}");
    }
    let twice = error(&format!(
        "{ACME}[[credential]]\nname = \"x\"\nrole = \"read\"\n{good_secret}\n\
             [[credential]]\nname = \"x\"\nrole = \"admin\"\nsecret = \"fedcba9876543210\"\n"
    ));
    assert_eq!(twice.field(), Some("credential[1].name"));
}

#[test]
fn request_limits_come_from_the_tenants_limits_and_the_credential_bounded_both_ways() {
    let config = parse(&format!(
        "[defaults.limits]\nrequest_operations = 500\n{ACME}[tenant.limits]\n\
             request_body = \"64KiB\"\n\
             [[credential]]\nname = \"app\"\nrole = \"ingest\"\nsecret = \"0123456789abcdef\"\n\
             request_operations = 20\nrequest_body = 8192\n"
    ))
    .unwrap();
    assert_eq!(
        config.tenants[0].limits.requests,
        RequestLimits {
            body_bytes: 64 << 10,
            operations: 500
        }
    );
    assert_eq!(
        config.credentials[0].limits,
        RequestLimits {
            body_bytes: 8192,
            operations: 20
        }
    );
    for (limits, field) in [
        ("request_body = \"1KiB\"", "tenant[0].limits.request_body"),
        ("request_body = \"2GiB\"", "tenant[0].limits.request_body"),
        (
            "request_operations = 0",
            "tenant[0].limits.request_operations",
        ),
    ] {
        let e = error(&format!("{ACME}[tenant.limits]\n{limits}\n"));
        assert_eq!(e.field(), Some(field), "{limits}: {e}");
    }
    let e = error(&format!(
        "{ACME}[[credential]]\nname = \"x\"\nrole = \"read\"\nsecret = \"0123456789abcdef\"\n\
             request_operations = -1\n"
    ));
    assert_eq!(e.field(), Some("credential[0].request_operations"));
}

#[test]
fn tls_takes_a_certificate_and_a_key_together_relative_to_the_file() {
    let config = parse(&format!(
        "tls_cert = \"tls/cert.pem\"\ntls_key = \"/keys/key.pem\"\n{ACME}"
    ))
    .unwrap();
    assert_eq!(
        config.tls,
        Some(TlsFiles {
            cert: Path::new(BASE_DIR).join("tls/cert.pem"),
            key: PathBuf::from("/keys/key.pem"),
        })
    );
    assert_eq!(
        error(&format!("tls_cert = \"c.pem\"\n{ACME}")).field(),
        Some("tls_key")
    );
    assert_eq!(
        error(&format!("tls_key = \"k.pem\"\n{ACME}")).field(),
        Some("tls_cert")
    );
    assert_eq!(parse(ACME).unwrap().tls, None);
}
