//! Relay order per tenant, and the published feeds (`events()`, `published_after`) paged with
//! a cursor that never skips.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use savdo_bus::{Bus, relay};
use savdo_domain::Qty;
use savdo_storage::{NewStockDoc, StockDocKind, StockDocLine, Storage};
use uuid::Uuid;

use crate::backend_tests;
use crate::common::{
    Db, PublishLog, Shop, duplicates, of_tenant, product, products, recording_publish, shop,
};

/// Interleaved writes of several tenants: products and supplies.
async fn interleaved(store: &Arc<dyn Storage>, shops: &[Shop], prefix: &str, rounds: usize) {
    for r in 0..rounds {
        for s in shops {
            let p = store
                .create_product(&s.actor, &product(&format!("{prefix}-{r}"), 100))
                .await
                .unwrap();
            if r % 2 == 0 {
                store
                    .create_stock_doc(
                        &s.actor,
                        &NewStockDoc {
                            kind: StockDocKind::Supply,
                            store_id: s.store_id,
                            to_store_id: None,
                            note: None,
                            lines: vec![StockDocLine {
                                product_id: p.id,
                                qty: Qty::units(3),
                                cost: None,
                            }],
                        },
                    )
                    .await
                    .unwrap();
            }
        }
    }
}

backend_tests!(relay_publishes_each_tenant_in_outbox_order);

async fn relay_publishes_each_tenant_in_outbox_order(db: &Db) {
    let store = &db.store;
    let shops = vec![
        shop(store, "T1").await,
        shop(store, "T2").await,
        shop(store, "T3").await,
    ];
    interleaved(store, &shops, "I", 6).await;

    let log: PublishLog = Arc::new(Mutex::new(Vec::new()));
    let publish = recording_publish(log.clone(), Duration::ZERO);
    let mut batches = 0;
    loop {
        let n = store.relay_batch(4, &publish).await.unwrap();
        if n == 0 {
            break;
        }
        assert!(n <= 4);
        batches += 1;
    }
    assert!(batches >= 7, "small batches: {batches}");
    let log = log.lock().unwrap().clone();
    assert!(duplicates(log.iter().map(|e| e.0)).is_empty());

    let feed = store.published_after(0, 1000).await.unwrap();
    assert_eq!(feed.len(), log.len());
    assert!(
        feed.windows(2).all(|w| w[0].seq < w[1].seq),
        "published_after is in publishing order"
    );
    for s in &shops {
        let inserted = db.outbox_ids(s.tenant).await;
        assert_eq!(inserted.len(), 9);
        assert_eq!(of_tenant(&log, s.tenant), inserted, "publish order");
        let fed: Vec<Uuid> = feed
            .iter()
            .filter(|e| e.tenant_id == s.tenant)
            .map(|e| e.id)
            .collect();
        assert_eq!(fed, inserted, "feed order");
        let events: Vec<Uuid> = store
            .events(s.tenant, 0, &[], 500)
            .await
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(events, inserted, "events() order");
    }
}

backend_tests!(events_feed_paging_never_skips);

async fn events_feed_paging_never_skips(db: &Db) {
    let store = &db.store;
    let bus = Bus::in_process();
    let a = shop(store, "Pager A").await;
    let b = shop(store, "Pager B").await;

    // A client pages the feed while events keep being written and relayed.
    let mut cursor = 0;
    let mut got: Vec<Uuid> = Vec::new();
    let mut all_cursor = 0;
    let mut all_got: Vec<Uuid> = Vec::new();
    for round in 0..5 {
        interleaved(
            store,
            &[a.clone(), b.clone()],
            &format!("I{round}"),
            1 + round % 2,
        )
        .await;
        products(store, &b, &format!("B{round}"), 2).await;
        // Half relayed now, the rest later: the cursor must not run past unrelayed events.
        if round % 2 == 0 {
            relay::drain(store, &bus).await.unwrap();
        }
        loop {
            let page = store.events(a.tenant, cursor, &[], 3).await.unwrap();
            assert!(page.len() <= 3);
            let Some(last) = page.last() else { break };
            assert!(
                page.iter()
                    .all(|e| e.tenant_id == a.tenant && e.seq > cursor)
            );
            cursor = last.seq;
            got.extend(page.iter().map(|e| e.id));
        }
        loop {
            let page = store.published_after(all_cursor, 4).await.unwrap();
            let Some(last) = page.last() else { break };
            all_cursor = last.seq;
            all_got.extend(page.iter().map(|e| e.id));
        }
    }
    relay::drain(store, &bus).await.unwrap();
    loop {
        let page = store.events(a.tenant, cursor, &[], 3).await.unwrap();
        let Some(last) = page.last() else { break };
        cursor = last.seq;
        got.extend(page.iter().map(|e| e.id));
    }
    loop {
        let page = store.published_after(all_cursor, 4).await.unwrap();
        let Some(last) = page.last() else { break };
        all_cursor = last.seq;
        all_got.extend(page.iter().map(|e| e.id));
    }
    assert_eq!(got, db.outbox_ids(a.tenant).await, "tenant feed, paged");
    assert!(duplicates(all_got.iter().copied()).is_empty());
    assert_eq!(all_got.len() as i64, db.outbox_total().await);
    assert_eq!(all_cursor, store.last_pub_seq().await.unwrap());

    // The type filter pages the same way.
    let only = vec!["stock.changed".to_string()];
    let mut cursor = 0;
    let mut stock = Vec::new();
    loop {
        let page = store.events(a.tenant, cursor, &only, 2).await.unwrap();
        let Some(last) = page.last() else { break };
        assert!(page.iter().all(|e| e.kind == "stock.changed"));
        cursor = last.seq;
        stock.extend(page.iter().map(|e| e.id));
    }
    let want: Vec<Uuid> = store
        .events(a.tenant, 0, &[], 500)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "stock.changed")
        .map(|e| e.id)
        .collect();
    assert!(!want.is_empty());
    assert_eq!(stock, want);
    // Another tenant's events never show.
    assert!(
        store
            .events(a.tenant, 0, &[], 500)
            .await
            .unwrap()
            .iter()
            .all(|e| e.tenant_id == a.tenant)
    );
}
