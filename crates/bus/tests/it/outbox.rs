//! An event is in the outbox if and only if the transaction that produced it committed.

use savdo_bus::{Bus, relay};
use savdo_domain::Qty;
use savdo_storage::{NewStockDoc, ReceiptOutcome, StockDocKind, StockDocLine, StorageError};
use serde_json::json;
use uuid::Uuid;

use crate::backend_tests;
use crate::common::{Db, product, sale, shop};

fn supply(store_id: Uuid, product_id: Uuid, units: i64) -> NewStockDoc {
    NewStockDoc {
        kind: StockDocKind::Supply,
        store_id,
        to_store_id: None,
        note: None,
        lines: vec![StockDocLine {
            product_id,
            qty: Qty::units(units),
            cost: None,
        }],
    }
}

/// Types of the tenant's published events, in feed order.
async fn published_types(db: &Db, tenant: Uuid) -> Vec<String> {
    db.store
        .events(tenant, 0, &[], 500)
        .await
        .expect("events")
        .into_iter()
        .map(|e| e.kind)
        .collect()
}

backend_tests!(committed_changes_and_only_those_reach_the_outbox);

async fn committed_changes_and_only_those_reach_the_outbox(db: &Db) {
    let store = &db.store;
    let bus = Bus::in_process();
    let shop = shop(store, "Outbox shop").await;
    let other = shop_other(db).await;

    // Committed state changes: each leaves its events (prices in tiyin: 5,000 UZS).
    let p = store
        .create_product(&shop.actor, &product("TEA-1", 500_000))
        .await
        .unwrap();
    store
        .create_stock_doc(&shop.actor, &supply(shop.store_id, p.id, 2))
        .await
        .unwrap();
    let r = sale(&shop, p.id, 1, 500_000, 500_000);
    let created = store.submit_receipt(&shop.actor, &r, "h1").await.unwrap();
    assert!(matches!(created, ReceiptOutcome::Created(_)));
    assert_eq!(store.outbox_backlog().await.unwrap(), 4);

    let n = relay::drain(store, &bus).await.unwrap();
    assert_eq!(n, 4, "the relay publishes every committed event");
    assert_eq!(store.outbox_backlog().await.unwrap(), 0);
    let expected = [
        "product.created",
        "stock.changed",
        "receipt.created",
        "stock.changed",
    ];
    assert_eq!(published_types(db, shop.tenant).await, expected);
    let feed = store.events(shop.tenant, 0, &[], 500).await.unwrap();
    assert_eq!(feed[0].data["id"], json!(p.id));
    assert_eq!(feed[2].data["id"], json!(r.id));
    let all = store.published_after(0, 500).await.unwrap();
    assert_eq!(
        all.iter()
            .filter(|e| e.tenant_id == shop.tenant)
            .map(|e| e.id)
            .collect::<Vec<_>>(),
        feed.iter().map(|e| e.id).collect::<Vec<_>>(),
        "published_after and the tenant feed agree"
    );
    assert_eq!(db.outbox_ids(shop.tenant).await.len(), 4);

    let before_ids = db.outbox_ids(shop.tenant).await;
    let before_total = db.outbox_total().await;
    let stock_before = store.stock(shop.tenant, None, None).await.unwrap();

    // 1. Payments that do not add up.
    let bad = sale(&shop, p.id, 1, 500_000, 400_000);
    let e = store.submit_receipt(&shop.actor, &bad, "h2").await;
    assert!(matches!(e, Err(StorageError::Invalid(_))), "{e:?}");

    // 2. A duplicate SKU.
    let e = store
        .create_product(&shop.actor, &product("TEA-1", 1))
        .await;
    assert!(matches!(e, Err(StorageError::Conflict { .. })), "{e:?}");

    // 3. A stock document naming another tenant's product.
    let e = store
        .create_stock_doc(&shop.actor, &supply(shop.store_id, other, 5))
        .await;
    assert!(matches!(e, Err(StorageError::Invalid(_))), "{e:?}");

    // 4. A bulk upsert whose second item fails after the first wrote its product and event.
    let mut taken = product("COFFEE-1", 1);
    taken.barcodes = vec!["4780000000011".into()];
    store.create_product(&shop.actor, &taken).await.unwrap();
    let before_ids_bulk = db.outbox_ids(shop.tenant).await;
    let mut clash = product("SUGAR-1", 1);
    clash.barcodes = vec!["4780000000011".into()];
    let e = store
        .bulk_upsert_products(&shop.actor, &[product("RICE-1", 1), clash])
        .await;
    assert!(matches!(e, Err(StorageError::Conflict { .. })), "{e:?}");
    assert_eq!(
        db.outbox_ids(shop.tenant).await,
        before_ids_bulk,
        "the first item's product.created was rolled back with its batch"
    );
    assert!(
        store
            .list_products(
                shop.tenant,
                &savdo_storage::ProductFilter {
                    sku: Some("RICE-1".into()),
                    limit: 10,
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .0
            .is_empty()
    );

    // 5. A sale that fails after moving stock inside its transaction (forbid_negative_stock):
    // one unit is left, three are sold.
    store
        .update_settings(&shop.actor, &json!({"forbid_negative_stock": true}))
        .await
        .unwrap();
    let too_much = sale(&shop, p.id, 3, 500_000, 1_500_000);
    let e = store.submit_receipt(&shop.actor, &too_much, "h3").await;
    assert!(matches!(e, Err(StorageError::Invalid(_))), "{e:?}");
    assert!(matches!(
        store.get_receipt(shop.tenant, too_much.id).await,
        Err(StorageError::NotFound(_))
    ));

    // 6. The same for a write-off.
    let e = store
        .create_stock_doc(
            &shop.actor,
            &NewStockDoc {
                kind: StockDocKind::Writeoff,
                ..supply(shop.store_id, p.id, 7)
            },
        )
        .await;
    assert!(matches!(e, Err(StorageError::Invalid(_))), "{e:?}");

    // 7. A retried receipt (same id, same content) is answered from storage: no new events.
    let again = store.submit_receipt(&shop.actor, &r, "h1").await.unwrap();
    assert!(matches!(again, ReceiptOutcome::Replayed(_)));

    // Only COFFEE-1's product.created is new.
    let after_ids = db.outbox_ids(shop.tenant).await;
    assert_eq!(after_ids.len(), before_ids.len() + 1, "{after_ids:?}");
    assert_eq!(after_ids[..before_ids.len()], before_ids[..]);
    assert_eq!(db.outbox_total().await, before_total + 1);
    let stock_after: Vec<_> = store
        .stock(shop.tenant, None, None)
        .await
        .unwrap()
        .into_iter()
        .map(|l| (l.product_id, l.on_hand))
        .collect();
    assert_eq!(
        stock_after,
        stock_before
            .iter()
            .map(|l| (l.product_id, l.on_hand))
            .collect::<Vec<_>>(),
        "failed transactions left stock alone"
    );

    assert_eq!(relay::drain(store, &bus).await.unwrap(), 1);
    let mut expected = expected.to_vec();
    expected.push("product.created");
    assert_eq!(published_types(db, shop.tenant).await, expected);
    assert_eq!(store.outbox_backlog().await.unwrap(), 0);
    assert_eq!(relay::drain(store, &bus).await.unwrap(), 0);
}

/// A product of another tenant (its events are published here so they do not disturb counts).
async fn shop_other(db: &Db) -> Uuid {
    let other = shop(&db.store, "Other shop").await;
    let p = db
        .store
        .create_product(&other.actor, &product("OTHER-1", 100))
        .await
        .unwrap();
    relay::drain(&db.store, &Bus::in_process()).await.unwrap();
    p.id
}
