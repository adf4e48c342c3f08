//! What trustlog needs of the tables it shares with applications, and how the tables a
//! database already holds measure up: the report `trustlog migrate` prints, the SQL
//! `migrate --apply` runs, and the refusal of `serve` on a schema it cannot serve.
//!
//! Each adapter only reads its catalogue into [`Column`]s; the judgement is here, once,
//! with the rules that differ by [`Dialect`].

use std::fmt;

use trustlog_guest::validate::LIMITS;

/// The SQL dialect whose types a judgement reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite: declared types are affinities; any value fits any column.
    Sqlite,
    /// PostgreSQL.
    Postgres,
    /// MySQL and MariaDB.
    MySql,
}

/// The tables trustlog reads and writes, in the order they are reported.
pub const TABLES: [&str; 4] = [
    "operation",
    "trustlog_cursor",
    "trustlog_retry",
    "trustlog_lease",
];

/// What a column must be able to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// An op_id: text compared in byte order, since the keyset order is (timestamp,
    /// op_id bytes) and operation joins trustlog_retry on it.
    Key,
    /// Text of at most `limit` characters; a narrower column refuses longer values when
    /// they are recorded, which trustlog can live with.
    Text { limit: usize },
    /// Text trustlog itself writes, at least `min` characters long.
    Owned {
        min: usize,
        default: Option<&'static str>,
    },
    /// Text of any length.
    Long,
    /// An instant.
    Time,
    /// A whole number.
    Integer,
}

/// One column trustlog reads or writes.
struct Needed {
    table: &'static str,
    column: &'static str,
    kind: Kind,
    /// Whether trustlog needs a value in every row.
    required: bool,
}

const fn col(table: &'static str, column: &'static str, kind: Kind, required: bool) -> Needed {
    Needed {
        table,
        column,
        kind,
        required,
    }
}

/// The longest cursor value: a 27-character timestamp, `|` and a 64-character op_id.
const CURSOR_VALUE_MIN: usize = 92;

/// Every column trustlog uses in the tables applications may have created first (the
/// seed's module creates all three); `trustlog_lease` is trustlog's own.
const NEEDED: &[Needed] = &[
    col("operation", "op_id", Kind::Key, true),
    col("operation", "op_actor", text("op_actor"), true),
    col("operation", "doid", text("doid"), true),
    col("operation", "producer_id", text("producer_id"), true),
    col(
        "operation",
        "request_body_hash",
        text("request_body_hash"),
        false,
    ),
    col(
        "operation",
        "response_body_hash",
        text("response_body_hash"),
        false,
    ),
    col("operation", "op_source", text("op_source"), true),
    col("operation", "op_type", text("op_type"), true),
    col("operation", "do_prefix", text("do_prefix"), true),
    col("operation", "do_repository", text("do_repository"), true),
    col("operation", "client_ip", text("client_ip"), false),
    col("operation", "server_ip", text("server_ip"), false),
    col(
        "operation",
        "trustlog_status",
        Kind::Owned {
            min: "NOT_TRUSTLOGGED".len(),
            default: Some("NOT_TRUSTLOGGED"),
        },
        true,
    ),
    col("operation", "timestamp", Kind::Time, true),
    col(
        "trustlog_cursor",
        "cursor_key",
        Kind::Owned {
            min: 64,
            default: None,
        },
        true,
    ),
    col(
        "trustlog_cursor",
        "cursor_value",
        Kind::Owned {
            min: CURSOR_VALUE_MIN,
            default: None,
        },
        true,
    ),
    col("trustlog_cursor", "last_updated_at", Kind::Time, true),
    col("trustlog_retry", "op_id", Kind::Key, true),
    col("trustlog_retry", "retry_count", Kind::Integer, true),
    col(
        "trustlog_retry",
        "retry_status",
        Kind::Owned {
            min: "DEAD_LETTER".len(),
            default: Some("PENDING"),
        },
        true,
    ),
    col("trustlog_retry", "last_retry_at", Kind::Time, false),
    col("trustlog_retry", "next_retry_at", Kind::Time, false),
    col("trustlog_retry", "error_message", Kind::Long, false),
    col("trustlog_retry", "created_at", Kind::Time, true),
    col("trustlog_retry", "updated_at", Kind::Time, true),
];

/// The limit of an operation field, from the guest's validation.
const fn text(field: &str) -> Kind {
    let mut i = 0;
    while i < LIMITS.len() {
        if const_eq(LIMITS[i].0, field) {
            return Kind::Text { limit: LIMITS[i].1 };
        }
        i += 1;
    }
    panic!("a field without a limit")
}

const fn const_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// One column as the database's catalogue describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// The table holding it.
    pub table: String,
    /// Its name.
    pub name: String,
    /// Its type as the catalogue names it, lower case (`character varying`,
    /// `datetime`, `VARCHAR(64)` on SQLite as declared).
    pub data_type: String,
    /// The declared maximum length of a text column, in characters.
    pub max_length: Option<u64>,
    /// The collation comparing its values (the database's default where the column
    /// names none), for text columns.
    pub collation: Option<String>,
    /// The fractional-second digits of a time column, where the type has them.
    pub precision: Option<u64>,
}

/// Whether trustlog can work with what a finding describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Served as it is; the note says what follows from it.
    Note,
    /// Not servable until the change is made.
    Change,
}

/// One way a table differs from what trustlog would create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// `table.column`.
    pub object: String,
    /// Whether it blocks serving.
    pub verdict: Verdict,
    /// What was found and what follows from it.
    pub message: String,
    /// The SQL that makes the change, for [`Verdict::Change`].
    pub fix: Option<String>,
}

/// How each of trustlog's tables measures up.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SchemaReport {
    /// Tables not there yet: migrating creates them.
    pub missing_tables: Vec<String>,
    /// Tables there already.
    pub existing_tables: Vec<String>,
    /// Differences from what trustlog would create, in table and column order.
    pub findings: Vec<Finding>,
}

impl SchemaReport {
    /// Whether some table must change before trustlog can serve it.
    pub fn needs_change(&self) -> bool {
        self.findings.iter().any(|f| f.verdict == Verdict::Change)
    }

    /// The statements that make every needed change, in order.
    pub fn fixes(&self) -> Vec<&str> {
        self.findings
            .iter()
            .filter_map(|f| f.fix.as_deref())
            .collect()
    }
}

impl fmt::Display for SchemaReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for table in TABLES {
            let found: Vec<&Finding> = self
                .findings
                .iter()
                .filter(|x| x.object.split('.').next() == Some(table))
                .collect();
            if self.missing_tables.iter().any(|t| t == table) {
                writeln!(f, "{table}: missing; migrate creates it")?;
            } else if found.iter().any(|x| x.verdict == Verdict::Change) {
                writeln!(f, "{table}: needs a change")?;
            } else if self.existing_tables.iter().any(|t| t == table) {
                writeln!(f, "{table}: serves as is")?;
            }
            for x in found {
                let tag = match x.verdict {
                    Verdict::Note => "note",
                    Verdict::Change => "change",
                };
                writeln!(f, "  {tag}: {}: {}", x.object, x.message)?;
            }
        }
        let fixes = self.fixes();
        if !fixes.is_empty() {
            writeln!(
                f,
                "SQL of the changes (`trustlog migrate --apply` runs it):"
            )?;
            for sql in fixes {
                writeln!(f, "  {sql};")?;
            }
        }
        Ok(())
    }
}

/// Judges the `columns` of trustlog's tables that exist.
pub fn judge(dialect: Dialect, columns: &[Column]) -> SchemaReport {
    let mut report = SchemaReport::default();
    for table in TABLES {
        if columns.iter().any(|c| c.table == table) {
            report.existing_tables.push(table.to_string());
        } else {
            report.missing_tables.push(table.to_string());
        }
    }
    for needed in NEEDED {
        if report.missing_tables.iter().any(|t| t == needed.table) {
            continue;
        }
        let object = format!("{}.{}", needed.table, needed.column);
        match columns
            .iter()
            .find(|c| c.table == needed.table && c.name.eq_ignore_ascii_case(needed.column))
        {
            None => report.findings.push(Finding {
                message: format!(
                    "missing; trustlog {} it",
                    if needed.required {
                        "reads and writes"
                    } else {
                        "reads"
                    }
                ),
                fix: Some(add_column(dialect, needed)),
                object,
                verdict: Verdict::Change,
            }),
            Some(found) => {
                if let Some((verdict, message, fix)) = judge_column(dialect, needed, found) {
                    report.findings.push(Finding {
                        object,
                        verdict,
                        message,
                        fix,
                    });
                }
            }
        }
    }
    report
}

type Judgement = Option<(Verdict, String, Option<String>)>;

fn judge_column(dialect: Dialect, needed: &Needed, found: &Column) -> Judgement {
    let ty = found.data_type.to_ascii_lowercase();
    let shown = shown_type(found);
    if dialect == Dialect::Sqlite {
        // Any value fits any SQLite column: a value that cannot be read is a row fault,
        // dead-lettered alone, never a reason to stop.
        return match needed.kind {
            Kind::Time if !ty.contains("int") => Some((
                Verdict::Note,
                format!(
                    "declared {shown}: trustlog writes integer microseconds; text it finds \
                     is read in RFC 3339, Go's and CURRENT_TIMESTAMP's forms, as UTC when \
                     it has no offset"
                ),
                None,
            )),
            _ => None,
        };
    }
    match needed.kind {
        Kind::Key => {
            if !is_text(dialect, &ty) {
                return change_type(dialect, needed, &shown);
            }
            let collation = found.collation.clone().unwrap_or_default();
            if !byte_ordered(dialect, &collation) {
                let size = found.max_length.map_or(64, |n| n.max(1));
                let fix = match dialect {
                    Dialect::Postgres => format!(
                        "ALTER TABLE {} ALTER COLUMN op_id TYPE VARCHAR({size}) COLLATE \"C\"",
                        needed.table
                    ),
                    _ => format!(
                        "ALTER TABLE {} MODIFY op_id VARCHAR({size}) CHARACTER SET utf8mb4 \
                         COLLATE utf8mb4_bin NOT NULL",
                        needed.table
                    ),
                };
                return Some((
                    Verdict::Change,
                    format!(
                        "collation {collation:?} does not compare in byte order: the keyset \
                         scan could skip or repeat rows{}",
                        if dialect == Dialect::MySql {
                            ", and op_ids differing only in case would collide"
                        } else {
                            ""
                        }
                    ),
                    Some(fix),
                ));
            }
            narrower(found, 64, &shown)
        }
        Kind::Text { limit } => {
            if !is_text(dialect, &ty) {
                return change_type(dialect, needed, &shown);
            }
            narrower(found, limit, &shown)
        }
        Kind::Owned { min, .. } => {
            if !is_text(dialect, &ty) || found.max_length.is_some_and(|n| n < min as u64) {
                return Some((
                    Verdict::Change,
                    format!("{shown}: trustlog writes values of up to {min} characters here"),
                    Some(modify(dialect, needed)),
                ));
            }
            None
        }
        Kind::Long => {
            if !is_text(dialect, &ty) || found.max_length.is_some_and(|n| n < 1024) {
                return Some((
                    Verdict::Change,
                    format!("{shown}: a publisher's error text can be long"),
                    Some(modify(dialect, needed)),
                ));
            }
            None
        }
        Kind::Integer => {
            if ![
                "integer",
                "int",
                "bigint",
                "smallint",
                "mediumint",
                "tinyint",
            ]
            .contains(&ty.as_str())
            {
                return change_type(dialect, needed, &shown);
            }
            None
        }
        Kind::Time => judge_time(dialect, needed, found, &ty, &shown),
    }
}

fn judge_time(
    dialect: Dialect,
    needed: &Needed,
    found: &Column,
    ty: &str,
    shown: &str,
) -> Judgement {
    match (dialect, ty) {
        (Dialect::Postgres, "timestamp with time zone") => None,
        (Dialect::Postgres, "timestamp without time zone") => Some((
            Verdict::Note,
            format!(
                "{shown}: read and written in the session's zone: UTC, or the one the URL \
                 names (options=-c TimeZone=…)"
            ),
            None,
        )),
        (Dialect::MySql, "datetime") => match found.precision {
            Some(p) if p < 6 => Some((
                Verdict::Note,
                format!(
                    "{shown}: keeps {p} fractional digits; the database cuts or rounds \
                     the rest of the microseconds recorded through trustlog"
                ),
                None,
            )),
            _ => None,
        },
        (Dialect::MySql, "timestamp") => Some((
            Verdict::Note,
            format!(
                "{shown}: read and written as UTC (trustlog's sessions use time_zone \
                 '+00:00'); TIMESTAMP ends in 2038"
            ),
            None,
        )),
        _ => change_type(dialect, needed, shown),
    }
}

/// A note on a text column narrower than what trustlog accepts.
fn narrower(found: &Column, limit: usize, shown: &str) -> Judgement {
    match found.max_length {
        Some(n) if n < limit as u64 => Some((
            Verdict::Note,
            format!(
                "{shown}: the database refuses values over {n} characters when they are \
                 recorded (trustlog accepts up to {limit})"
            ),
            None,
        )),
        _ => None,
    }
}

fn change_type(dialect: Dialect, needed: &Needed, shown: &str) -> Judgement {
    Some((
        Verdict::Change,
        format!("{shown} cannot hold {}", what(needed.kind)),
        Some(modify(dialect, needed)),
    ))
}

fn what(kind: Kind) -> &'static str {
    match kind {
        Kind::Key | Kind::Text { .. } | Kind::Owned { .. } | Kind::Long => "text",
        Kind::Time => "a timestamp",
        Kind::Integer => "a whole number",
    }
}

fn shown_type(found: &Column) -> String {
    match (found.max_length, found.precision) {
        (Some(n), _) if found.data_type.contains("char") => format!("{}({n})", found.data_type),
        (_, Some(p)) if p > 0 => format!("{}({p})", found.data_type),
        _ => found.data_type.clone(),
    }
}

fn is_text(dialect: Dialect, ty: &str) -> bool {
    match dialect {
        Dialect::Sqlite => true,
        Dialect::Postgres => ["character varying", "text", "character"].contains(&ty),
        Dialect::MySql => [
            "varchar",
            "char",
            "text",
            "tinytext",
            "mediumtext",
            "longtext",
        ]
        .contains(&ty),
    }
}

/// Whether a collation orders text as trustlog's keyset does: by UTF-8 bytes.
fn byte_ordered(dialect: Dialect, collation: &str) -> bool {
    match dialect {
        Dialect::Sqlite => true,
        Dialect::Postgres => {
            let c = collation.to_ascii_lowercase();
            ["c", "posix", "c.utf-8", "c.utf8", "ucs_basic"].contains(&c.as_str())
        }
        Dialect::MySql => collation == "binary" || collation.ends_with("_bin"),
    }
}

/// The type trustlog would give the column, in `dialect`.
fn column_type(dialect: Dialect, kind: Kind) -> String {
    match (dialect, kind) {
        (Dialect::Sqlite, Kind::Time | Kind::Integer) => "INTEGER".into(),
        (Dialect::Sqlite, _) => "TEXT".into(),
        (Dialect::Postgres, Kind::Key) => "VARCHAR(64) COLLATE \"C\"".into(),
        (Dialect::MySql, Kind::Key) => {
            "VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin".into()
        }
        (_, Kind::Text { limit }) => format!("VARCHAR({limit})"),
        (Dialect::Postgres, Kind::Owned { .. } | Kind::Long) => "TEXT".into(),
        (Dialect::MySql, Kind::Owned { min, .. }) => format!("VARCHAR({})", min.max(255)),
        (Dialect::MySql, Kind::Long) => "MEDIUMTEXT".into(),
        (Dialect::Postgres, Kind::Time) => "TIMESTAMPTZ".into(),
        (Dialect::MySql, Kind::Time) => "DATETIME(6)".into(),
        (_, Kind::Integer) => "BIGINT".into(),
    }
}

/// `NOT NULL` and a default that existing rows can take, or `NULL`.
fn nullability(dialect: Dialect, needed: &Needed) -> String {
    if !needed.required {
        return "NULL".into();
    }
    let default = match needed.kind {
        Kind::Owned {
            default: Some(d), ..
        } => format!("'{d}'"),
        Kind::Integer => "0".into(),
        Kind::Time => match dialect {
            Dialect::Sqlite => "0".into(),
            Dialect::Postgres => "now()".into(),
            Dialect::MySql => "CURRENT_TIMESTAMP(6)".into(),
        },
        _ => "''".into(),
    };
    format!("NOT NULL DEFAULT {default}")
}

fn add_column(dialect: Dialect, needed: &Needed) -> String {
    format!(
        "ALTER TABLE {} ADD COLUMN {} {} {}",
        needed.table,
        needed.column,
        column_type(dialect, needed.kind),
        nullability(dialect, needed)
    )
}

/// The statement changing an existing column to what trustlog would create.
fn modify(dialect: Dialect, needed: &Needed) -> String {
    let ty = column_type(dialect, needed.kind);
    match dialect {
        Dialect::Postgres => {
            let cast = match needed.kind {
                Kind::Time => "timestamptz",
                Kind::Integer => "bigint",
                _ => "text",
            };
            format!(
                "ALTER TABLE {t} ALTER COLUMN {c} TYPE {ty} USING {c}::{cast}",
                t = needed.table,
                c = needed.column
            )
        }
        Dialect::MySql => format!(
            "ALTER TABLE {} MODIFY {} {ty} {}",
            needed.table,
            needed.column,
            if needed.required { "NOT NULL" } else { "NULL" }
        ),
        // SQLite columns hold any value; nothing is ever judged to need a change.
        Dialect::Sqlite => String::new(),
    }
}

/// Converts the text times of SQLite retry rows to integer microseconds. julianday()
/// reads the forms SQLite's date functions know (with an offset or none, taken as
/// UTC); a time it cannot read becomes 0: due at once, which a retry can afford.
const SQLITE_RETRY_TIMES_TO_INTEGERS: &str = "UPDATE trustlog_retry SET \
     next_retry_at = CASE WHEN typeof(next_retry_at) = 'text' THEN coalesce(CAST(round((julianday(next_retry_at) - 2440587.5) * 86400000000) AS INTEGER), 0) ELSE next_retry_at END, \
     last_retry_at = CASE WHEN typeof(last_retry_at) = 'text' THEN coalesce(CAST(round((julianday(last_retry_at) - 2440587.5) * 86400000000) AS INTEGER), 0) ELSE last_retry_at END, \
     created_at = CASE WHEN typeof(created_at) = 'text' THEN coalesce(CAST(round((julianday(created_at) - 2440587.5) * 86400000000) AS INTEGER), 0) ELSE created_at END, \
     updated_at = CASE WHEN typeof(updated_at) = 'text' THEN coalesce(CAST(round((julianday(updated_at) - 2440587.5) * 86400000000) AS INTEGER), 0) ELSE updated_at END \
     WHERE 'text' IN (typeof(next_retry_at), typeof(last_retry_at), typeof(created_at), typeof(updated_at))";

impl SchemaReport {
    /// Adds the finding on `rows` SQLite retry rows whose times are text, if any.
    pub fn with_text_retry_times(mut self, rows: u64) -> SchemaReport {
        if rows > 0 {
            self.findings.push(Finding {
                object: "trustlog_retry.next_retry_at".into(),
                verdict: Verdict::Change,
                message: format!(
                    "{rows} rows hold their times as text (as the seed's module writes \
                     them); trustlog compares integer microseconds and would never find \
                     them due"
                ),
                fix: Some(SQLITE_RETRY_TIMES_TO_INTEGERS.into()),
            });
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(table: &str, name: &str, ty: &str, len: Option<u64>) -> Column {
        Column {
            table: table.into(),
            name: name.into(),
            data_type: ty.into(),
            max_length: len,
            collation: Some("C".into()),
            precision: None,
        }
    }

    /// The operation table as the seed's module declares it on PostgreSQL.
    fn seed_operation() -> Vec<Column> {
        NEEDED
            .iter()
            .filter(|n| n.table == "operation")
            .map(|n| match n.kind {
                Kind::Time => column(n.table, n.column, "timestamp without time zone", None),
                _ => column(n.table, n.column, "character varying", Some(32)),
            })
            .collect()
    }

    #[test]
    fn a_fresh_database_misses_every_table_and_needs_no_change() {
        let r = judge(Dialect::Postgres, &[]);
        assert_eq!(r.missing_tables, TABLES);
        assert!(!r.needs_change());
        assert!(r.findings.is_empty());
    }

    #[test]
    fn timestamp_without_zone_and_narrow_text_serve_as_is_with_notes() {
        let r = judge(Dialect::Postgres, &seed_operation());
        assert!(!r.needs_change(), "{r}");
        let notes: Vec<&str> = r.findings.iter().map(|f| f.object.as_str()).collect();
        assert!(notes.contains(&"operation.timestamp"), "{r}");
        assert!(notes.contains(&"operation.doid"), "{r}");
        assert!(r.to_string().contains("operation: serves as is"), "{r}");
    }

    #[test]
    fn a_missing_column_needs_a_change_with_the_sql_that_adds_it() {
        let cols: Vec<Column> = seed_operation()
            .into_iter()
            .filter(|c| c.name != "trustlog_status")
            .collect();
        let r = judge(Dialect::Postgres, &cols);
        assert!(r.needs_change());
        assert_eq!(
            r.fixes(),
            [
                "ALTER TABLE operation ADD COLUMN trustlog_status TEXT NOT NULL DEFAULT 'NOT_TRUSTLOGGED'"
            ]
        );
        assert!(r.to_string().contains("operation: needs a change"), "{r}");
    }

    #[test]
    fn an_op_id_under_a_linguistic_or_case_blind_collation_needs_a_change() {
        let mut cols = seed_operation();
        cols[0].collation = Some("en_US.utf8".into());
        let r = judge(Dialect::Postgres, &cols);
        assert_eq!(
            r.fixes(),
            ["ALTER TABLE operation ALTER COLUMN op_id TYPE VARCHAR(32) COLLATE \"C\""]
        );
        cols[0].collation = Some("utf8mb4_general_ci".into());
        for c in &mut cols {
            c.data_type = if c.name == "timestamp" {
                "datetime"
            } else {
                "varchar"
            }
            .into();
        }
        let r = judge(Dialect::MySql, &cols);
        assert!(r.fixes()[0].contains("COLLATE utf8mb4_bin"), "{r}");
    }

    #[test]
    fn a_timestamp_kept_as_text_on_a_server_needs_a_change_but_not_on_sqlite() {
        let mut cols = seed_operation();
        let ts = cols.iter_mut().find(|c| c.name == "timestamp").unwrap();
        ts.data_type = "text".into();
        let r = judge(Dialect::Postgres, &cols);
        assert_eq!(
            r.fixes(),
            [
                "ALTER TABLE operation ALTER COLUMN timestamp TYPE TIMESTAMPTZ USING timestamp::timestamptz"
            ]
        );
        let r = judge(Dialect::Sqlite, &cols);
        assert!(!r.needs_change(), "{r}");
        assert_eq!(r.findings.len(), 1, "a note on the text timestamps: {r}");
    }

    #[test]
    fn mysql_datetime_of_any_precision_and_timestamp_are_served() {
        let mut cols = seed_operation();
        for c in &mut cols {
            c.data_type = "varchar".into();
            c.collation = Some("utf8mb4_bin".into());
        }
        for (ty, p, note) in [
            ("datetime", Some(6), false),
            ("datetime", Some(3), true),
            ("datetime", Some(0), true),
            ("timestamp", Some(6), true),
        ] {
            let ts = cols.iter_mut().find(|c| c.name == "timestamp").unwrap();
            ts.data_type = ty.into();
            ts.precision = p;
            let r = judge(Dialect::MySql, &cols);
            assert!(!r.needs_change(), "{ty}({p:?}): {r}");
            let noted = r.findings.iter().any(|f| f.object == "operation.timestamp");
            assert_eq!(noted, note, "{ty}({p:?}): {r}");
        }
    }
}
