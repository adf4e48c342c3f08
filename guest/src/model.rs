//! Plain Rust mirrors of the WIT types in `wit/trustlog.wit`.
//!
//! The decision logic works on these so it builds and tests natively; the
//! component layer converts them to and from the generated bindings by move.

use std::cmp::Ordering;
use std::fmt;

/// Microseconds since the Unix epoch, UTC.
pub type Micros = i64;

/// The names of [`Operation`]'s text fields, in the order it declares them.
pub const TEXT_FIELDS: [&str; 12] = [
    "op_id",
    "op_actor",
    "doid",
    "producer_id",
    "request_body_hash",
    "response_body_hash",
    "op_source",
    "op_type",
    "do_prefix",
    "do_repository",
    "client_ip",
    "server_ip",
];

/// One recorded operation, a row of the `operation` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// Unique id of the operation: the primary key, and the keyset tie-breaker.
    pub op_id: String,
    /// Who performed the operation.
    pub op_actor: String,
    /// The identifier of the digital object the operation acted on.
    pub doid: String,
    /// The service that produced this record of the operation.
    pub producer_id: String,
    /// A hash of the request's body, when there was one.
    pub request_body_hash: Option<String>,
    /// A hash of the response's body, when there was one.
    pub response_body_hash: Option<String>,
    /// Where the operation came from, e.g. `IRP`.
    pub op_source: String,
    /// What kind of operation it was, e.g. `Create`.
    pub op_type: String,
    /// The prefix of the digital object's identifier, e.g. `10.1000`.
    pub do_prefix: String,
    /// The repository that holds the digital object.
    pub do_repository: String,
    /// The client's IPv4 or IPv6 address, when known.
    pub client_ip: Option<String>,
    /// The server's IPv4 or IPv6 address, when known.
    pub server_ip: Option<String>,
    /// When the operation happened; with `op_id`, the row's keyset position.
    pub timestamp: Micros,
}

impl Operation {
    /// The keyset position of this row.
    pub fn position(&self) -> Position {
        self.view().position()
    }

    /// This operation, borrowed.
    pub fn view(&self) -> OperationRef<'_> {
        OperationRef {
            op_id: &self.op_id,
            op_actor: &self.op_actor,
            doid: &self.doid,
            producer_id: &self.producer_id,
            request_body_hash: self.request_body_hash.as_deref(),
            response_body_hash: self.response_body_hash.as_deref(),
            op_source: &self.op_source,
            op_type: &self.op_type,
            do_prefix: &self.do_prefix,
            do_repository: &self.do_repository,
            client_ip: self.client_ip.as_deref(),
            server_ip: self.server_ip.as_deref(),
            timestamp: self.timestamp,
        }
    }
}

/// An [`Operation`] borrowed from wherever its text lives: what delivery reads, so a
/// scanned batch is never copied field by field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OperationRef<'a> {
    /// Unique id of the operation: the primary key, and the keyset tie-breaker.
    pub op_id: &'a str,
    /// Who performed the operation.
    pub op_actor: &'a str,
    /// The identifier of the digital object the operation acted on.
    pub doid: &'a str,
    /// The service that produced this record of the operation.
    pub producer_id: &'a str,
    /// A hash of the request's body, when there was one.
    pub request_body_hash: Option<&'a str>,
    /// A hash of the response's body, when there was one.
    pub response_body_hash: Option<&'a str>,
    /// Where the operation came from, e.g. `IRP`.
    pub op_source: &'a str,
    /// What kind of operation it was, e.g. `Create`.
    pub op_type: &'a str,
    /// The prefix of the digital object's identifier, e.g. `10.1000`.
    pub do_prefix: &'a str,
    /// The repository that holds the digital object.
    pub do_repository: &'a str,
    /// The client's IPv4 or IPv6 address, when known.
    pub client_ip: Option<&'a str>,
    /// The server's IPv4 or IPv6 address, when known.
    pub server_ip: Option<&'a str>,
    /// When the operation happened; with `op_id`, the row's keyset position.
    pub timestamp: Micros,
}

impl OperationRef<'_> {
    /// The keyset position of this row.
    pub fn position(&self) -> Position {
        Position {
            timestamp: self.timestamp,
            op_id: self.op_id.to_owned(),
        }
    }

    /// Whether this row comes after `other` in keyset order.
    pub fn is_after(&self, other: &OperationRef<'_>) -> bool {
        (self.timestamp, self.op_id.as_bytes()) > (other.timestamp, other.op_id.as_bytes())
    }

    /// An owned copy.
    pub fn to_operation(&self) -> Operation {
        let owned = |s: Option<&str>| s.map(str::to_owned);
        Operation {
            op_id: self.op_id.to_owned(),
            op_actor: self.op_actor.to_owned(),
            doid: self.doid.to_owned(),
            producer_id: self.producer_id.to_owned(),
            request_body_hash: owned(self.request_body_hash),
            response_body_hash: owned(self.response_body_hash),
            op_source: self.op_source.to_owned(),
            op_type: self.op_type.to_owned(),
            do_prefix: self.do_prefix.to_owned(),
            do_repository: self.do_repository.to_owned(),
            client_ip: owned(self.client_ip),
            server_ip: owned(self.server_ip),
            timestamp: self.timestamp,
        }
    }
}

impl<'a> From<&'a Operation> for OperationRef<'a> {
    fn from(op: &'a Operation) -> Self {
        op.view()
    }
}

/// `operation.trustlog_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrustlogStatus {
    /// `NOT_TRUSTLOGGED`: stored, waiting for delivery.
    NotTrustlogged,
    /// `TRUSTLOGGED`: the trust log confirmed it.
    Trustlogged,
    /// `DB_ONLY`: stored under the db-only strategy; never published.
    DbOnly,
}

impl TrustlogStatus {
    /// The string stored in the database (the seed's spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            TrustlogStatus::NotTrustlogged => "NOT_TRUSTLOGGED",
            TrustlogStatus::Trustlogged => "TRUSTLOGGED",
            TrustlogStatus::DbOnly => "DB_ONLY",
        }
    }
}

/// How `record` treats an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Strategy {
    /// Store, never publish.
    DbOnly,
    /// Store, publish asynchronously (the default).
    #[default]
    DbAndTrustlog,
    /// Publish synchronously, store nothing.
    TrustlogOnly,
}

impl Strategy {
    /// The name used on the command line and in config files.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::DbOnly => "db-only",
            Strategy::DbAndTrustlog => "db-and-trustlog",
            Strategy::TrustlogOnly => "trustlog-only",
        }
    }
}

impl std::str::FromStr for Strategy {
    type Err = FieldError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "db-only" => Ok(Strategy::DbOnly),
            "db-and-trustlog" => Ok(Strategy::DbAndTrustlog),
            "trustlog-only" => Ok(Strategy::TrustlogOnly),
            other => Err(FieldError::new(
                "strategy",
                format!(
                    "unknown strategy {other:?}; expected db-only, db-and-trustlog or trustlog-only"
                ),
            )),
        }
    }
}

/// `trustlog_retry.retry_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryStatus {
    /// `PENDING`: the first delivery failed; waiting for its first retry.
    Pending,
    /// `RETRYING`: a retry failed too; waiting for the next one.
    Retrying,
    /// `DEAD_LETTER`: given up on; no tick picks it up again.
    DeadLetter,
}

impl RetryStatus {
    /// The string stored in the database (the seed's spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            RetryStatus::Pending => "PENDING",
            RetryStatus::Retrying => "RETRYING",
            RetryStatus::DeadLetter => "DEAD_LETTER",
        }
    }
}

/// A keyset position; rows are totally ordered by (timestamp, op_id).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Position {
    /// When the row's operation happened: the first sort key.
    pub timestamp: Micros,
    /// The row's op_id: breaks ties between equal timestamps, in byte order.
    pub op_id: String,
}

impl Ord for Position {
    fn cmp(&self, other: &Self) -> Ordering {
        // Byte order of op_id matches the databases' binary collation of the index.
        (self.timestamp, self.op_id.as_bytes()).cmp(&(other.timestamp, other.op_id.as_bytes()))
    }
}

impl PartialOrd for Position {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// What is delivered: canonical bytes of one operation and their SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The operation's id; brokers deduplicate on it.
    pub op_id: String,
    /// The canonical JSON of the operation, in UTF-8.
    pub payload: Vec<u8>,
    /// The lower-case hex SHA-256 of `payload`.
    pub sha256: String,
}

/// Exponential backoff settings; see [`crate::backoff`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay before the first retry, in microseconds.
    pub base_micros: u64,
    /// What each further delay is multiplied by.
    pub factor: u32,
    /// The longest delay before a retry, in microseconds.
    pub cap_micros: u64,
    /// Failed retries allowed before the row is dead-lettered.
    pub max_retries: u32,
}

/// Engine settings, given once after instantiation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The `trustlog_cursor.cursor_key` this engine advances.
    pub cursor_key: String,
    /// Rows per scan, retry and sweep batch.
    pub batch_size: u32,
    /// The retry schedule of failed deliveries.
    pub backoff: Backoff,
    /// The strategy `record` applies when the caller names none.
    pub default_strategy: Strategy,
    /// How far behind the cursor the catch-up tick looks for late commits; 0 turns it off.
    pub catch_up_window_micros: u64,
    /// How many scan batches may be out at once, read and not yet known committed
    /// (1 to [`MAX_PIPELINE_DEPTH`]); 1 delivers one batch at a time.
    pub pipeline_depth: u32,
}

/// The pipeline depth when none is configured: one batch read while the one before it
/// is at the trust log and the one before that commits.
pub const DEFAULT_PIPELINE_DEPTH: u32 = 3;

/// The deepest pipeline a configuration may ask for: each batch out holds its rows
/// and envelopes, and beyond three stages a batch only waits for a turn.
pub const MAX_PIPELINE_DEPTH: u32 = 8;

/// The catch-up window when none is configured: transactions that stay open longer
/// than this commit rows that only the sweep finds.
pub const DEFAULT_CATCH_UP_WINDOW_MICROS: u64 = 5 * 60 * 1_000_000;

/// The cursor key the seed's worker uses; the default.
pub const DEFAULT_CURSOR_KEY: &str = "operation_scan";

impl Default for Config {
    fn default() -> Self {
        Config {
            cursor_key: DEFAULT_CURSOR_KEY.to_string(),
            batch_size: 100,
            backoff: Backoff::default(),
            default_strategy: Strategy::DbAndTrustlog,
            catch_up_window_micros: DEFAULT_CATCH_UP_WINDOW_MICROS,
            pipeline_depth: DEFAULT_PIPELINE_DEPTH,
        }
    }
}

/// A rejected input, naming the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The name of the field at fault, e.g. `op_id` or `backoff.cap`.
    pub field: String,
    /// What is wrong with its value.
    pub message: String,
}

impl FieldError {
    /// A field error for `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for FieldError {}

/// A failure of the database import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbError {
    /// The named op_id already exists.
    Conflict(String),
    /// A value the database refused (too long, malformed).
    Invalid(FieldError),
    /// Another worker moved the named cursor first; nothing was applied.
    CursorMoved(String),
    /// The database cannot be reached or timed out; worth retrying.
    Unavailable(String),
    /// Anything else, with the database's message.
    Other(String),
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbError::Conflict(id) => write!(f, "op_id {id:?} already exists"),
            DbError::Invalid(e) => write!(f, "invalid value: {e}"),
            DbError::CursorMoved(key) => write!(f, "cursor {key:?} was moved by another worker"),
            DbError::Unavailable(m) => write!(f, "database unavailable: {m}"),
            DbError::Other(m) => write!(f, "database error: {m}"),
        }
    }
}

impl std::error::Error for DbError {}

/// A failure of one envelope's delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishError {
    /// This envelope was not confirmed; worth retrying later, at the cost of one retry.
    Transient(String),
    /// Refused by the trust log; it never will be accepted.
    Permanent(String),
    /// The trust log as a whole cannot be reached; the envelope is not at fault.
    Unavailable(String),
}

impl PublishError {
    /// The message, whatever the kind.
    pub fn message(&self) -> &str {
        match self {
            PublishError::Transient(m)
            | PublishError::Permanent(m)
            | PublishError::Unavailable(m) => m,
        }
    }
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishError::Transient(m) => write!(f, "transient publish error: {m}"),
            PublishError::Permanent(m) => write!(f, "permanent publish error: {m}"),
            PublishError::Unavailable(m) => write!(f, "trust log unavailable: {m}"),
        }
    }
}

impl std::error::Error for PublishError {}

/// Whether each operation of an insert was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertOutcome {
    /// Stored as a new row.
    Inserted,
    /// An operation with this op_id was already stored; it was left untouched.
    Duplicate,
}

/// A due retry, joined with its operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryRow {
    /// The operation to deliver again.
    pub op: Operation,
    /// Failed retries of the row so far.
    pub retry_count: u32,
}

/// A row the host could not read as an operation: a value of the wrong type or in no
/// known form, text that is not UTF-8, a NULL where a value is needed. The engine
/// dead-letters it on its own; the rows around it go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowFault {
    /// The op_id of the unreadable row.
    pub op_id: String,
    /// The column that could not be read.
    pub column: String,
    /// Why the column could not be read.
    pub message: String,
    /// Failed retries of the row, when it came from the retry queue (else 0).
    pub retry_count: u32,
}

impl fmt::Display for RowFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "op_id {:?}: unreadable column {}: {}",
            self.op_id, self.column, self.message
        )
    }
}

/// What a read of rows returned: the rows, and those that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched<T> {
    /// The rows read, in order.
    pub rows: Vec<T>,
    /// The rows that could not be read.
    pub faults: Vec<RowFault>,
}

impl<T> Default for Fetched<T> {
    fn default() -> Self {
        Fetched {
            rows: Vec::new(),
            faults: Vec::new(),
        }
    }
}

impl<T> Fetched<T> {
    /// Rows read and rows that could not be, together.
    pub fn len(&self) -> usize {
        self.rows.len() + self.faults.len()
    }

    /// Whether nothing came back.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.faults.is_empty()
    }
}

/// One row of `trustlog_retry` to write (insert or overwrite).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryUpdate {
    /// The operation the retry row belongs to.
    pub op_id: String,
    /// Failed retries so far (0 after a failed first delivery).
    pub retry_count: u32,
    /// Whether the row waits for a retry or is dead-lettered.
    pub retry_status: RetryStatus,
    /// When the last retry was attempted; none after a failed first delivery.
    pub last_retry_at: Option<Micros>,
    /// When the row is due again; none once dead-lettered.
    pub next_retry_at: Option<Micros>,
    /// The last delivery failure, for the operator.
    pub error_message: String,
}

/// Moves a cursor with compare-and-set on its old value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorMove {
    /// The `trustlog_cursor.cursor_key` to move.
    pub key: String,
    /// The value the cursor must still hold; none when it was never set.
    pub expected: Option<Position>,
    /// The position to move it to.
    pub to: Position,
}

/// Everything one tick decided, applied by the host in one transaction.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnitOfWork {
    /// The tick's time, stamped on the rows it writes.
    pub now: Micros,
    /// Set `TRUSTLOGGED` (only rows still `NOT_TRUSTLOGGED` change).
    pub trustlogged: Vec<String>,
    /// Insert or overwrite these retry rows.
    pub retries: Vec<RetryUpdate>,
    /// Delete the retry rows of these op_ids.
    pub delete_retries: Vec<String>,
    /// Advance a cursor; on a mismatch nothing of the unit is applied.
    pub cursor: Option<CursorMove>,
}

/// Raw monitoring counts read in one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DbStats {
    /// All rows of `operation`.
    pub total: u64,
    /// Rows `TRUSTLOGGED`: confirmed by the trust log.
    pub trustlogged: u64,
    /// Rows `NOT_TRUSTLOGGED`: waiting for delivery, a retry, or dead-lettered.
    pub not_trustlogged: u64,
    /// Rows `DB_ONLY`: never to be published.
    pub db_only: u64,
    /// Retry rows waiting for a retry (`PENDING` or `RETRYING`).
    pub retry_pending: u64,
    /// Retry rows given up on (`DEAD_LETTER`).
    pub dead_letter: u64,
    /// Where the engine's cursor stands, if it has moved yet.
    pub cursor: Option<Position>,
    /// The timestamp of the oldest `NOT_TRUSTLOGGED` row with no retry row.
    pub oldest_waiting: Option<Micros>,
    /// The earliest due time in the retry queue (pending or retrying rows).
    pub next_retry_at: Option<Micros>,
}

/// What an operator sees.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StatusReport {
    /// The raw counts.
    pub stats: DbStats,
    /// `now` minus `oldest_waiting`, in seconds; 0 when nothing waits.
    pub cursor_lag_seconds: f64,
}

/// Why an engine call failed as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineError {
    /// Called before `configure`.
    NotConfigured,
    /// `configure` refused the settings, naming the field at fault.
    InvalidConfig(FieldError),
    /// The database failed.
    Db(DbError),
}

impl From<DbError> for EngineError {
    fn from(e: DbError) -> Self {
        EngineError::Db(e)
    }
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::NotConfigured => f.write_str("engine not configured"),
            EngineError::InvalidConfig(e) => write!(f, "invalid configuration: {e}"),
            EngineError::Db(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for EngineError {}

/// What became of one operation given to `record`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordOutcome {
    /// Stored (db-only or db-and-trustlog).
    Stored,
    /// Published and confirmed (trustlog-only).
    Published,
    /// Refused before any I/O: the named field is wrong.
    Rejected(FieldError),
    /// An operation with this op_id already exists; the stored one is unchanged.
    Duplicate,
    /// trustlog-only: the trust log did not confirm it.
    PublishFailed(PublishError),
}

/// Counts of one tick.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TickReport {
    /// Rows read from the database, readable or not.
    pub fetched: u32,
    /// Envelopes the trust log confirmed.
    pub published: u32,
    /// Rows whose delivery failed and that wait for a retry.
    pub retry_scheduled: u32,
    /// Rows given up on and dead-lettered.
    pub dead_lettered: u32,
    /// True when the batch was full, or the scan left batches out: call again at once.
    pub more: bool,
    /// True when another worker moved the cursor first; nothing was applied.
    pub cursor_conflict: bool,
    /// Rows left untouched because the trust log could not be reached.
    pub unavailable: u32,
    /// Rows dead-lettered because the host could not read them (also in `dead_lettered`).
    pub unreadable: u32,
    /// One delivery failure of the tick (an unavailable one first), for the host's log.
    pub error: Option<String>,
}
