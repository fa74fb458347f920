//! SQLite's log is copied back into the database file by the store's own checkpoint task, not
//! only when the writer's commits pass its (raised) threshold.

use std::time::{Duration, Instant};

use savdo_storage::{Actor, ProductFields, SqliteStore, Storage};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_is_checkpointed_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("savdo.db");
    let store = SqliteStore::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let tenant = store.create_tenant("Checkpoint shop").await.unwrap();
    let actor = Actor::system(tenant.id);
    // Give the task a round to copy the migrations, then note the file's size.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = std::fs::metadata(&path).unwrap().len();

    // About 4 MiB of products: far below the writer's own threshold (about 40 MiB of log).
    let items: Vec<ProductFields> = (0..4_000)
        .map(|i| {
            let name = format!("Product {i} {}", "x".repeat(900));
            savdo_testkit::product_fields(&format!("SKU-{i}"), &name, 1_000)
        })
        .collect();
    for chunk in items.chunks(500) {
        store.bulk_upsert_products(&actor, chunk).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = std::fs::metadata(&path).unwrap().len();
        if now >= before + 3 * 1024 * 1024 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the database file did not grow: {before} -> {now} bytes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
