//! The event bus against real storage (SQLite always; PostgreSQL when
//! `SAVDO_TEST_DATABASE_URL` is set) and real NATS JetStream (when `SAVDO_TEST_NATS_URL` is
//! set): transactional outbox, relay ordering and restarts, exactly-once consumers, retries and
//! dead letters, JetStream subjects, envelope and deduplication, concurrent relays.

mod common;

mod batching;
mod concurrency;
mod delivery;
mod feed;
mod nats;
mod ordering;
mod outbox;
mod relays;
mod retries;
