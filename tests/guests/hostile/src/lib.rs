//! trustlog components that misbehave on purpose, for the fault and isolation tests.
//!
//! Each wraps the real engine and breaks it in one way, chosen by a cargo feature:
//! - `trap-after-publish`: every second unit of work panics before it is committed,
//!   after its envelopes were published (a guest dying mid-tick);
//! - `trap-every-tick`: every tick panics before doing anything;
//! - `trap-storm`: every second tick of an instance panics, the others deliver;
//! - `infinite-loop`: every fourth tick of an instance spins forever;
//! - `memory-bomb`: every fourth tick allocates and touches memory until it cannot;
//! - `log-flood`: every fourth tick logs without end;
//! - `malformed-envelopes`: every envelope batch it publishes has op_id ends past its text.
//!
//! `record` and `status` are always the real engine's, so the tests can feed a
//! hostile tenant rows and read its state. The kinds that misbehave only now and then
//! deliver in the ticks between, so a neighbour's ledger could show their rows if
//! anything crossed, and they stay hostile for as long as the host restarts them.

#[cfg(target_arch = "wasm32")]
mod hostile {
    use trustlog_guest::component::exports::trustlog::engine::engine as x;
    use trustlog_guest::component::{
        Component, ComponentEngine, Imports, db, monitoring, publisher, t, with_engine,
    };
    use trustlog_guest::engine::{Host, Level};
    use trustlog_guest::envelope_batch::EnvelopeBatch;
    use trustlog_guest::model as m;
    use trustlog_guest::packed::{RetryRows, Rows};

    /// The wrapper exported as the component.
    pub struct Hostile;

    trustlog_guest::component::export_trustlog!(Hostile with_types_in trustlog_guest::component);

    /// The real imports, with the unit of work sabotaged in `trap-after-publish`.
    struct Faulty<'a>(&'a mut Imports);

    thread_local! {
        static APPLIES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
        static TICKS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    impl Host for Faulty<'_> {
        type Delivery = publisher::Delivery;
        type Commit = db::Commit;

        fn insert(
            &mut self,
            ops: Vec<m::Operation>,
            status: m::TrustlogStatus,
        ) -> Result<Vec<m::InsertOutcome>, m::DbError> {
            self.0.insert(ops, status)
        }
        fn load_cursor(&mut self, key: &str) -> Result<Option<m::Position>, m::DbError> {
            self.0.load_cursor(key)
        }
        fn scan_after(
            &mut self,
            after: Option<m::Position>,
            limit: u32,
        ) -> Result<Rows, m::DbError> {
            self.0.scan_after(after, limit)
        }
        fn due_retries(&mut self, now: m::Micros, limit: u32) -> Result<RetryRows, m::DbError> {
            self.0.due_retries(now, limit)
        }
        fn sweep_candidates(
            &mut self,
            before: m::Position,
            since: m::Micros,
            limit: u32,
        ) -> Result<Rows, m::DbError> {
            self.0.sweep_candidates(before, since, limit)
        }
        fn stats(&mut self, cursor_key: &str) -> Result<m::DbStats, m::DbError> {
            self.0.stats(cursor_key)
        }
        fn apply(&mut self, work: m::UnitOfWork) -> Result<(), m::DbError> {
            sabotage(&work);
            self.0.apply(work)
        }
        fn begin_apply(&mut self, work: m::UnitOfWork) -> db::Commit {
            sabotage(&work);
            self.0.begin_apply(work)
        }
        fn commit_outcome(&mut self, commit: db::Commit) -> Result<(), m::DbError> {
            self.0.commit_outcome(commit)
        }
        fn publish(&mut self, batch: EnvelopeBatch) -> Vec<Result<(), m::PublishError>> {
            self.0.publish(malform(batch))
        }
        fn send(&mut self, batch: EnvelopeBatch) -> publisher::Delivery {
            self.0.send(malform(batch))
        }
        fn confirmations(
            &mut self,
            delivery: publisher::Delivery,
        ) -> Vec<Result<(), m::PublishError>> {
            self.0.confirmations(delivery)
        }
        fn log(&mut self, level: Level, message: &str) {
            self.0.log(level, message)
        }
        fn sha256(&mut self, payloads: &[u8], ends: &[u32]) -> Vec<[u8; 32]> {
            self.0.sha256(payloads, ends)
        }
    }

    /// In `trap-after-publish`, dies before every second unit of work that marks rows.
    fn sabotage(work: &m::UnitOfWork) {
        let n = APPLIES.with(|c| {
            c.set(c.get() + 1);
            c.get()
        });
        // The counter starts again in each fresh instance, so ticks alternate
        // between dying and committing and the backlog still drains.
        if cfg!(feature = "trap-after-publish")
            && n.is_multiple_of(2)
            && !work.trustlogged.is_empty()
        {
            panic!(
                "hostile guest: dying after publishing {} envelopes, before committing (unit of work {n} of this instance)",
                work.trustlogged.len()
            );
        }
    }

    /// In `malformed-envelopes`, says every op_id ends past the text that holds them.
    fn malform(mut batch: EnvelopeBatch) -> EnvelopeBatch {
        if cfg!(feature = "malformed-envelopes") {
            let past = batch.op_ids.len() as u32 + 1;
            batch.op_id_ends.iter_mut().for_each(|end| *end = past);
        }
        batch
    }

    /// The misbehaviour of this build, run at the start of every tick.
    fn misbehave() {
        // Counted per instance: a trap or a limit costs the instance, so the count
        // starts again in the next one.
        let n = TICKS.with(|c| {
            c.set(c.get() + 1);
            c.get()
        });
        if cfg!(feature = "trap-every-tick") {
            panic!("hostile guest: trapping in every tick");
        }
        if cfg!(feature = "trap-storm") && n.is_multiple_of(2) {
            panic!("hostile guest: trapping in tick {n} of this instance");
        }
        if !n.is_multiple_of(4) {
            return;
        }
        if cfg!(feature = "infinite-loop") {
            let mut spins: u64 = 0;
            loop {
                spins = std::hint::black_box(spins.wrapping_add(1));
            }
        }
        if cfg!(feature = "memory-bomb") {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                // Touch every page, so the memory is really used, not just reserved.
                hoard.push(vec![0xA5; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        if cfg!(feature = "log-flood") {
            let mut n: u64 = 0;
            loop {
                n += 1;
                Imports.log(Level::Error, &format!("hostile guest: log line {n}"));
            }
        }
    }

    fn tick(
        f: impl FnOnce(&mut ComponentEngine, &mut Faulty<'_>) -> Result<m::TickReport, m::EngineError>,
    ) -> Result<x::TickReport, x::EngineError> {
        misbehave();
        with_engine(|e, h| f(e, &mut Faulty(h))).map(Into::into)
    }

    impl x::Guest for Hostile {
        fn configure(cfg: t::Config) -> Result<(), x::EngineError> {
            <Component as x::Guest>::configure(cfg)
        }

        fn record(
            ops: Vec<t::Operation>,
            strategy: Option<t::Strategy>,
        ) -> Result<Vec<x::RecordOutcome>, x::EngineError> {
            <Component as x::Guest>::record(ops, strategy)
        }

        fn scan_tick(now: t::Micros) -> Result<x::TickReport, x::EngineError> {
            tick(|e, h| e.scan_tick(h, now))
        }

        fn scan_settle(now: t::Micros) -> Result<x::TickReport, x::EngineError> {
            tick(|e, h| e.scan_settle(h, now))
        }

        fn retry_tick(now: t::Micros) -> Result<x::TickReport, x::EngineError> {
            tick(|e, h| e.retry_tick(h, now))
        }

        fn sweep_tick(now: t::Micros) -> Result<x::TickReport, x::EngineError> {
            tick(|e, h| e.sweep_tick(h, now))
        }

        fn catch_up_tick(now: t::Micros) -> Result<x::TickReport, x::EngineError> {
            tick(|e, h| e.catch_up_tick(h, now))
        }

        fn status(now: t::Micros) -> Result<monitoring::StatusReport, x::EngineError> {
            <Component as x::Guest>::status(now)
        }
    }
}
