//! The LISTEN connection that wakes workers when rows are inserted.

use super::*;

/// What the wake-up listener heard.
pub(in crate::db) enum Heard<'a> {
    /// It listens, for the first time or again after its connection was lost: rows
    /// committed meanwhile sent notifications nobody received. `schema` is the one
    /// `operation` resolves to on its connection.
    Listening { schema: Option<&'a str> },
    /// A notification; the trigger's payload names the schema inserted into.
    Notified { payload: &'a str },
}

/// Spawns a task that LISTENs on [`WAKE_CHANNEL`] for good and tells `heard` what it
/// hears; abort the handle to stop it. A failure is logged and listened on again,
/// with a backoff while that fails.
pub(in crate::db) fn spawn_wake_listener(
    options: PgConnectOptions,
    mut heard: impl FnMut(Heard<'_>) + Send + 'static,
) -> JoinHandle<()> {
    // A pool of its own with the same options (search_path included): the listener
    // holds its connection for good, which must not cost the workers one of theirs,
    // and `close()` must not wait for it.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(LISTEN_ACQUIRE_TIMEOUT)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_lazy_with(options);
    tokio::spawn(async move {
        let mut backoff = LISTEN_BACKOFF_MIN;
        loop {
            let Err(error) = listen(&pool, &mut heard, &mut backoff).await;
            tracing::warn!(
                %error,
                retry_in = ?backoff,
                "PostgreSQL wake-up listener failed; listening again shortly"
            );
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(LISTEN_BACKOFF_MAX);
        }
    })
}

/// LISTENs until the listener fails; resets `backoff` once listening.
pub(super) async fn listen(
    pool: &PgPool,
    heard: &mut impl FnMut(Heard<'_>),
    backoff: &mut Duration,
) -> Result<Infallible, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    // Its pool is never closed; without this a close would end every receive.
    listener.ignore_pool_close_event(true);
    let schema: Option<String> = sqlx::query_scalar(OWN_SCHEMA)
        .fetch_optional(&mut listener)
        .await?;
    listener.listen(WAKE_CHANNEL).await?;
    *backoff = LISTEN_BACKOFF_MIN;
    tracing::debug!(
        channel = WAKE_CHANNEL,
        ?schema,
        "listening for new operations"
    );
    heard(Heard::Listening {
        schema: schema.as_deref(),
    });
    loop {
        match listener.try_recv().await? {
            Some(notification) => heard(Heard::Notified {
                payload: notification.payload(),
            }),
            None => {
                // PgListener has already reconnected and listens again.
                tracing::warn!(
                    channel = WAKE_CHANNEL,
                    "PostgreSQL wake-up listener lost its connection; listening again"
                );
                heard(Heard::Listening {
                    schema: schema.as_deref(),
                });
            }
        }
    }
}
