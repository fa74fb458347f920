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
    marking: Arc<dyn savdo_hub::MarkingCheck>,
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
    let consumers: Vec<Arc<dyn Consumer>> = vec![
        Arc::new(savdo_webhooks::Dispatcher::new(store.clone())),
        Arc::new(savdo_connectors::fiscal_gateway::FiscalConsumer::new(
            store.clone(),
        )),
        Arc::new(savdo_connectors::marking_recheck::MarkingRecheck::new(
            store.clone(),
            marking,
        )),
    ];
    handles.extend(runner.spawn(bus, consumers, stop.clone()));
    let config = savdo_webhooks::WorkerConfig {
        allow_private: args.webhooks_allow_private,
        ..Default::default()
    };
    let deliveries = savdo_webhooks::DeliveryWorker::new(store, clock, config);
    handles.push(tokio::spawn(async move { deliveries.run(stop).await }));
    Ok(handles)
}

/// Integration types and the connectors built for them.
pub fn registry() -> Arc<savdo_hub::Registry> {
    let mut r = savdo_hub::Registry::builtin();
    savdo_connectors::aslbelgisi::register(&mut r);
    Arc::new(r)
}

/// The vault (key file in the data directory or `SAVDO_MASTER_KEY`) and the outbound HTTP stack
/// whose exchanges go to the integration log.
pub fn integration_hub(
    store: Arc<dyn Storage>,
    data_dir: &std::path::Path,
) -> anyhow::Result<(Arc<savdo_integrations::VaultHandle>, savdo_hub::HttpHub)> {
    let vault = savdo_integrations::VaultHandle::open(data_dir)
        .map_err(|e| anyhow::anyhow!("cannot open the credential vault: {e}"))?;
    let sink =
        savdo_integrations::StorageSink::spawn(store, savdo_integrations::sink::DEFAULT_KEEP);
    let hub = savdo_hub::HttpHub::new(Arc::new(SystemClock), sink)
        .map_err(|e| anyhow::anyhow!("cannot build the outbound HTTP stack: {e}"))?;
    Ok((Arc::new(vault), hub))
}

/// Connectors of each tenant's integrations, and the online marking check built on them.
pub fn tenant_connectors(
    store: Arc<dyn Storage>,
    vault: Arc<savdo_integrations::VaultHandle>,
    hub: savdo_hub::HttpHub,
) -> Arc<dyn savdo_hub::MarkingCheck> {
    let resolver = Arc::new(savdo_integrations::ConnectorResolver::new(
        store,
        vault,
        registry(),
        hub,
    ));
    Arc::new(savdo_integrations::TenantMarkingCheck::new(resolver))
}

/// The sync job runner (handlers are registered by the connector issues).
pub fn start_jobs(
    store: Arc<dyn Storage>,
    vault: Arc<savdo_integrations::VaultHandle>,
    hub: savdo_hub::HttpHub,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let runner = savdo_integrations::JobRunner::new(
        store,
        vault,
        registry(),
        Some(hub),
        Arc::new(savdo_integrations::SyncRegistry::new()),
    );
    tokio::spawn(runner.run(stop))
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
