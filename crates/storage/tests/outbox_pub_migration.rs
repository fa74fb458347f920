//! The migrations that move publishing numbers out of the outbox rows (SQLite, then PostgreSQL)
//! keep every number already given, and leave the rows not yet published to the relay.

use sqlx::Connection;
use sqlx::sqlite::SqliteConnection;

const BEFORE: &[&str] = &[
    include_str!("../migrations/sqlite/0001_core.sql"),
    include_str!("../migrations/sqlite/0002_bus.sql"),
    include_str!("../migrations/sqlite/0003_webhooks.sql"),
    include_str!("../migrations/sqlite/0004_integrations.sql"),
    include_str!("../migrations/sqlite/0005_marking.sql"),
    include_str!("../migrations/sqlite/0006_fiscal.sql"),
    include_str!("../migrations/sqlite/0007_loyalty.sql"),
    include_str!("../migrations/sqlite/0008_payments.sql"),
    include_str!("../migrations/sqlite/0009_marketplace_items.sql"),
    include_str!("../migrations/sqlite/0010_marketplace_stock.sql"),
    include_str!("../migrations/sqlite/0011_marketplace_orders.sql"),
    include_str!("../migrations/sqlite/0013_webhook_secret_hint.sql"),
    include_str!("../migrations/sqlite/0014_reconcile.sql"),
];
const OUTBOX_PUB: &str = include_str!("../migrations/sqlite/0015_outbox_pub.sql");

#[tokio::test]
async fn published_numbers_move_to_their_table_and_the_rest_stays_unpublished() {
    let mut db = SqliteConnection::connect("sqlite::memory:").await.unwrap();
    for sql in BEFORE {
        sqlx::raw_sql(sqlx::AssertSqlSafe(*sql))
            .execute(&mut db)
            .await
            .unwrap();
    }
    let tenants = [[1u8; 16], [2u8; 16]];
    for n in 1..=5i64 {
        // The first three were published (numbered 1..=3, two tenants), the last two not yet.
        let (pub_seq, published_at) = if n <= 3 {
            (Some(n), Some(1_000 + n))
        } else {
            (None, None)
        };
        sqlx::query(
            "INSERT INTO outbox (id, tenant_id, type, data, created_at, published_at, pub_seq) \
             VALUES ($1, $2, 'stock.changed', '{}', $3, $4, $5)",
        )
        .bind(uuid::Uuid::now_v7())
        .bind(&tenants[(n % 2) as usize][..])
        .bind(n)
        .bind(published_at)
        .bind(pub_seq)
        .execute(&mut db)
        .await
        .unwrap();
    }

    sqlx::raw_sql(OUTBOX_PUB).execute(&mut db).await.unwrap();

    let numbered: Vec<(i64, i64, Vec<u8>, i64)> = sqlx::query_as(
        "SELECT pub_seq, seq, tenant_id, published_at FROM outbox_pub ORDER BY pub_seq",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    let want: Vec<(i64, i64, Vec<u8>, i64)> = (1..=3)
        .map(|n| (n, n, tenants[(n % 2) as usize].to_vec(), 1_000 + n))
        .collect();
    assert_eq!(numbered, want);
    let unpublished: Vec<i64> = sqlx::query_scalar(
        "SELECT seq FROM outbox WHERE seq > (SELECT COALESCE(MAX(seq), 0) FROM outbox_pub) ORDER BY seq",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert_eq!(unpublished, vec![4, 5]);
    let gone = sqlx::query("SELECT pub_seq FROM outbox")
        .fetch_all(&mut db)
        .await;
    assert!(gone.is_err(), "the outbox rows no longer carry a number");
}

const PG_BEFORE: &[(i64, &str)] = &[
    (1, include_str!("../migrations/postgres/0001_core.sql")),
    (2, include_str!("../migrations/postgres/0002_bus.sql")),
    (3, include_str!("../migrations/postgres/0003_webhooks.sql")),
    (
        4,
        include_str!("../migrations/postgres/0004_integrations.sql"),
    ),
    (5, include_str!("../migrations/postgres/0005_marking.sql")),
    (6, include_str!("../migrations/postgres/0006_fiscal.sql")),
    (7, include_str!("../migrations/postgres/0007_loyalty.sql")),
    (8, include_str!("../migrations/postgres/0008_payments.sql")),
    (
        9,
        include_str!("../migrations/postgres/0009_marketplace_items.sql"),
    ),
    (
        10,
        include_str!("../migrations/postgres/0010_marketplace_stock.sql"),
    ),
    (
        11,
        include_str!("../migrations/postgres/0011_marketplace_orders.sql"),
    ),
    (
        13,
        include_str!("../migrations/postgres/0013_webhook_secret_hint.sql"),
    ),
    (
        14,
        include_str!("../migrations/postgres/0014_reconcile.sql"),
    ),
    (
        15,
        include_str!("../migrations/postgres/0015_outbox_unused_index.sql"),
    ),
];

fn accept(
    _: &[savdo_storage::OutboxEvent],
) -> futures_core::future::BoxFuture<'_, Result<(), String>> {
    Box::pin(async { Ok(()) })
}

#[tokio::test]
async fn postgres_numbers_move_to_their_table_and_the_relay_takes_the_rest() {
    use savdo_testkit::{Backend, FreshDb};
    let Some(db) = FreshDb::new(Backend::Postgres, "outbox_pub_migration").await else {
        return;
    };
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&db.url)
        .await
        .unwrap();
    let before = PG_BEFORE
        .iter()
        .map(|(v, sql)| {
            sqlx::migrate::Migration::new(
                *v,
                "before".into(),
                sqlx::migrate::MigrationType::Simple,
                sqlx::SqlSafeStr::into_sql_str(*sql),
                false,
            )
        })
        .collect();
    sqlx::migrate::Migrator::with_migrations(before)
        .run(&pool)
        .await
        .unwrap();
    let tenants = [uuid::Uuid::now_v7(), uuid::Uuid::now_v7()];
    let mut ids = Vec::new();
    for n in 1..=5i64 {
        let (pub_seq, published_at) = if n <= 3 {
            (Some(n), Some(1_000 + n))
        } else {
            (None, None)
        };
        let id = uuid::Uuid::now_v7();
        ids.push(id);
        sqlx::query(
            "INSERT INTO outbox (id, tenant_id, type, data, created_at, published_at, pub_seq) \
             VALUES ($1, $2, 'stock.changed', '{}', $3, $4, $5)",
        )
        .bind(id)
        .bind(tenants[(n % 2) as usize])
        .bind(n)
        .bind(published_at)
        .bind(pub_seq)
        .execute(&pool)
        .await
        .unwrap();
    }

    let store = savdo_storage::connect(&db.url).await.unwrap();
    store.migrate().await.unwrap();

    let numbered: Vec<(i64, i64, uuid::Uuid, i64)> = sqlx::query_as(
        "SELECT pub_seq, seq, tenant_id, published_at FROM outbox_pub ORDER BY pub_seq",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let want: Vec<(i64, i64, uuid::Uuid, i64)> = (1..=3)
        .map(|n| (n, n, tenants[(n % 2) as usize], 1_000 + n))
        .collect();
    assert_eq!(numbered, want);
    assert_eq!(store.outbox_backlog().await.unwrap(), 2);
    let gone = sqlx::query("SELECT pub_seq FROM outbox")
        .fetch_all(&pool)
        .await;
    assert!(gone.is_err(), "the outbox rows no longer carry a number");

    // The relay finds the two left and numbers them after the others, in outbox order.
    let relayed = store.relay(100, &accept).await.unwrap();
    assert_eq!(relayed.published, 2);
    let got: Vec<(i64, uuid::Uuid)> = relayed.numbered.iter().map(|e| (e.seq, e.id)).collect();
    assert_eq!(got, vec![(4, ids[3]), (5, ids[4])]);
    assert_eq!(store.outbox_backlog().await.unwrap(), 0);
    assert_eq!(store.relay(100, &accept).await.unwrap().published, 0);
    let all: Vec<uuid::Uuid> = store
        .published_after(0, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(all, ids);
    pool.close().await;
    db.drop_db().await;
}
