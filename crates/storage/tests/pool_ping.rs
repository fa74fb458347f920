//! PostgreSQL connections are pinged before use only after a second idle (a round trip saved
//! on every statement under load). A connection the server dropped is still found out: after
//! that second by the ping, before it is used; within it by the one statement that uses it,
//! after which it leaves the pool.

use std::time::Duration;

use savdo_testkit::{Backend, FreshDb};

/// Terminate every server process of this database but the caller's; returns how many.
async fn drop_connections(url: &str) -> i64 {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let killed: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()) AS t",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    // pg_terminate_backend only signals: wait until they are gone.
    for _ in 0..100 {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        let left: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        pool.close().await;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    killed
}

#[tokio::test]
async fn postgres_dropped_connections_are_found_out() {
    let Some(db) = FreshDb::new(Backend::Postgres, "pool_ping").await else {
        return;
    };
    let store = db.store().await;
    let tenant = uuid::Uuid::now_v7();
    store.list_stores(tenant).await.unwrap();

    // Idle past the threshold: the ping finds the dead connection and the pool opens another;
    // the caller never sees it.
    let killed = drop_connections(&db.url).await;
    assert!(killed >= 1, "the store had a connection open");
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    for _ in 0..3 {
        store
            .list_stores(tenant)
            .await
            .expect("a connection idle for over a second is pinged, and replaced when dead");
    }

    // Within the second: the statement that uses a dead connection fails, and that connection
    // leaves the pool, so failures are bounded by the connections killed.
    let killed = drop_connections(&db.url).await;
    assert!(killed >= 1);
    let mut failed = 0;
    loop {
        match store.list_stores(tenant).await {
            Ok(_) => break,
            Err(_) => failed += 1,
        }
        assert!(
            failed <= killed,
            "{failed} failures with {killed} connections dropped: a dead connection went back to the pool"
        );
    }
    store.list_stores(tenant).await.unwrap();
    db.drop_db().await;
}
