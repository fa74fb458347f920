//! The SQLite migration that moves publishing numbers out of the outbox rows keeps every number
//! already given, and leaves the rows not yet published to the relay.

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
