//! The background half of Savdo: the outbox relay and the event consumers, in `savdo serve`
//! (default) or in separate `savdo worker` processes.

use std::sync::Arc;
use std::time::Duration;

use savdo_bus::{Bus, Consumer, ConsumerRunner, relay};
use savdo_domain::clock::SystemClock;
use savdo_storage::Storage;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::BusArgs;

pub async fn start(
    store: Arc<dyn Storage>,
    args: &BusArgs,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let bus = match &args.nats_url {
        Some(url) => Bus::nats(url).await?,
        None => Bus::in_process(),
    };
    tracing::info!(bus = bus.kind(), "starting relay and consumers");
    let mut handles = vec![tokio::spawn(relay::run(
        store.clone(),
        bus.clone(),
        stop.clone(),
    ))];
    let clock = Arc::new(SystemClock);
    let runner = ConsumerRunner::new(store.clone(), clock.clone());
    let consumers: Vec<Arc<dyn Consumer>> =
        vec![Arc::new(savdo_webhooks::Dispatcher::new(store.clone()))];
    handles.extend(runner.spawn(bus, consumers, stop.clone()));
    let config = savdo_webhooks::WorkerConfig {
        allow_private: args.webhooks_allow_private,
        ..Default::default()
    };
    let deliveries = savdo_webhooks::DeliveryWorker::new(store, clock, config);
    handles.push(tokio::spawn(async move { deliveries.run(stop).await }));
    Ok(handles)
}

/// Wait for the workers to stop, but not forever.
pub async fn join(handles: Vec<JoinHandle<()>>) {
    let all = futures_join(handles);
    if tokio::time::timeout(Duration::from_secs(10), all)
        .await
        .is_err()
    {
        tracing::warn!("workers did not stop within 10 s");
    }
}

async fn futures_join(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}
