//! The outbound HTTP stack against local servers.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::any;
use chrono::Utc;
use savdo_domain::clock::{Clock, ManualClock, SystemClock};
use savdo_hub::{
    BreakerPolicy, BreakerState, ClientConfig, ConnectorError, HttpHub, HttpRequest, MemorySink,
    RateLimit, RetryPolicy, RouteLimit, Secret,
};

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

fn hub(clock: Arc<dyn Clock>) -> (HttpHub, Arc<MemorySink>) {
    let sink = Arc::new(MemorySink::new());
    (HttpHub::new(clock, sink.clone()).unwrap(), sink)
}

fn config(id: &str) -> ClientConfig {
    let mut c = ClientConfig::new("tenant-1", id, "test");
    c.timeout = Duration::from_secs(5);
    c.retry = RetryPolicy {
        max_attempts: 3,
        base: Duration::from_millis(10),
        max_delay: Duration::from_secs(3),
    };
    c
}

/// A server answering `status` (with extra headers) and counting hits.
async fn fixed(
    status: u16,
    headers: &'static [(&'static str, &'static str)],
) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let app = Router::new().fallback(any(move || {
        let h = h.clone();
        async move {
            h.fetch_add(1, Ordering::SeqCst);
            let mut map = HeaderMap::new();
            for (k, v) in headers {
                map.insert(*k, v.parse().unwrap());
            }
            (
                StatusCode::from_u16(status).unwrap(),
                map,
                "{\"error\":\"x\"}",
            )
                .into_response()
        }
    }));
    (serve(app).await, hits)
}

#[tokio::test]
async fn breaker_opens_after_failures_and_recovers_through_half_open() {
    let healthy = Arc::new(AtomicBool::new(false));
    let hits = Arc::new(AtomicUsize::new(0));
    let (hl, hi) = (healthy.clone(), hits.clone());
    let url = serve(Router::new().fallback(any(move || {
        let (hl, hi) = (hl.clone(), hi.clone());
        async move {
            hi.fetch_add(1, Ordering::SeqCst);
            if hl.load(Ordering::SeqCst) {
                StatusCode::OK
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    })))
    .await;
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let (hub, _sink) = hub(clock.clone());
    let mut cfg = config("int-breaker");
    cfg.retry.max_attempts = 1;
    cfg.breaker = BreakerPolicy {
        failure_threshold: 3,
        cool_down: Duration::from_secs(30),
    };
    let client = hub.client(cfg.clone());

    for _ in 0..3 {
        let e = client.send(HttpRequest::get(&url)).await.unwrap_err();
        assert!(matches!(e, ConnectorError::Unavailable { .. }), "{e}");
    }
    let s = client.breaker();
    assert_eq!((s.state, s.consecutive_failures), (BreakerState::Open, 3));
    assert_eq!(s.opened_at, Some(clock.now()));
    assert_eq!(s.last_failure.as_deref(), Some("unavailable"));

    // Open: fails at once, the server sees nothing.
    let e = client.send(HttpRequest::get(&url)).await.unwrap_err();
    assert_eq!(
        e,
        ConnectorError::CircuitOpen {
            retry_after: Some(Duration::from_secs(30))
        }
    );
    assert!(e.is_retryable());
    assert_eq!(hits.load(Ordering::SeqCst), 3);
    // A client built later for the same integration shares the breaker.
    let again = hub.client(cfg.clone());
    assert!(matches!(
        again.send(HttpRequest::get(&url)).await,
        Err(ConnectorError::CircuitOpen { .. })
    ));

    // After the cool-down one probe goes through; it fails, so the circuit opens again.
    clock.advance(chrono::Duration::seconds(30));
    assert!(client.send(HttpRequest::get(&url)).await.is_err());
    assert_eq!(hits.load(Ordering::SeqCst), 4);
    let s = hub.breaker_state("int-breaker").unwrap();
    assert_eq!(s.state, BreakerState::Open);
    assert_eq!(s.opened_at, Some(clock.now()));
    assert!(matches!(
        client.send(HttpRequest::get(&url)).await,
        Err(ConnectorError::CircuitOpen { .. })
    ));

    // The provider recovers: the next probe closes the circuit.
    healthy.store(true, Ordering::SeqCst);
    clock.advance(chrono::Duration::seconds(31));
    let r = client.send(HttpRequest::get(&url)).await.unwrap();
    assert_eq!(r.status, 200);
    let s = client.breaker();
    assert_eq!(
        (s.state, s.consecutive_failures, s.opened_at),
        (BreakerState::Closed, 0, None)
    );
    assert!(client.send(HttpRequest::get(&url)).await.is_ok());
    assert_eq!(hits.load(Ordering::SeqCst), 6);
}

#[tokio::test]
async fn four_hundreds_are_not_breaker_failures_nor_retried() {
    let (url, hits) = fixed(400, &[]).await;
    let (hub, sink) = hub(Arc::new(SystemClock));
    let mut cfg = config("int-400");
    cfg.breaker.failure_threshold = 2;
    let client = hub.client(cfg);
    for _ in 0..3 {
        let r = client
            .send(HttpRequest::post(&url).json(&serde_json::json!({"a": 1})))
            .await
            .unwrap();
        assert_eq!(r.status, 400);
        assert_eq!(r.attempts, 1);
        let e = r.error_for_status().unwrap_err();
        assert!(
            matches!(&e, ConnectorError::Rejected { code, .. } if code == "400"),
            "{e}"
        );
    }
    assert_eq!(hits.load(Ordering::SeqCst), 3, "a 400 is tried once");
    assert_eq!(sink.exchanges().len(), 3);
    assert_eq!(client.breaker().state, BreakerState::Closed);

    let (url, _) = fixed(401, &[]).await;
    let e = client
        .send(HttpRequest::get(&url))
        .await
        .unwrap()
        .error_for_status()
        .unwrap_err();
    assert!(matches!(e, ConnectorError::Auth { .. }), "{e}");
}

#[tokio::test]
async fn five_hundred_threes_are_retried_up_to_the_maximum() {
    let (url, hits) = fixed(503, &[]).await;
    let (hub, sink) = hub(Arc::new(SystemClock));
    let client = hub.client(config("int-503"));
    let e = client.send(HttpRequest::get(&url)).await.unwrap_err();
    assert!(matches!(e, ConnectorError::Unavailable { .. }), "{e}");
    assert!(e.is_retryable());
    assert_eq!(hits.load(Ordering::SeqCst), 3);
    let attempts: Vec<u32> = sink.exchanges().iter().map(|x| x.attempt).collect();
    assert_eq!(attempts, vec![1, 2, 3]);
    assert!(sink.exchanges().iter().all(|x| x.status == Some(503)));

    // A request without an idempotency key is not repeated once it reached the provider.
    let e = client
        .send(HttpRequest::post(&url).not_idempotent())
        .await
        .unwrap_err();
    assert!(matches!(e, ConnectorError::Unavailable { .. }));
    assert_eq!(hits.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn too_many_requests_waits_for_retry_after() {
    for header in ["retry-after", "x-ratelimit-retry"] {
        let first = Arc::new(AtomicBool::new(true));
        let hits = Arc::new(AtomicUsize::new(0));
        let (f, h) = (first.clone(), hits.clone());
        let url = serve(Router::new().fallback(any(move || {
            let (f, h) = (f.clone(), h.clone());
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                if f.swap(false, Ordering::SeqCst) {
                    (StatusCode::TOO_MANY_REQUESTS, [(header, "1")], "slow down").into_response()
                } else {
                    (StatusCode::OK, "ok").into_response()
                }
            }
        })))
        .await;
        let (hub, _) = hub(Arc::new(SystemClock));
        let client = hub.client(config("int-429"));
        let t0 = Instant::now();
        let r = client.send(HttpRequest::get(&url)).await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.attempts, 2);
        assert!(
            t0.elapsed() >= Duration::from_secs(1),
            "{header}: waited only {:?}",
            t0.elapsed()
        );
        assert_eq!(hits.load(Ordering::SeqCst), 2);
    }
}

#[tokio::test]
async fn a_retry_after_beyond_the_cap_is_handed_back() {
    let (url, hits) = fixed(429, &[("retry-after", "120")]).await;
    let (hub, _) = hub(Arc::new(SystemClock));
    let client = hub.client(config("int-429-long"));
    let t0 = Instant::now();
    let e = client.send(HttpRequest::get(&url)).await.unwrap_err();
    assert_eq!(
        e,
        ConnectorError::RateLimited {
            retry_after: Some(Duration::from_secs(120))
        }
    );
    assert!(t0.elapsed() < Duration::from_secs(1));
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn timeouts_and_connect_errors_are_retried() {
    let url = serve(Router::new().fallback(any(|| async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        "late"
    })))
    .await;
    let (hub, sink) = hub(Arc::new(SystemClock));
    let mut cfg = config("int-timeout");
    cfg.retry.max_attempts = 2;
    let client = hub.client(cfg);
    let t0 = Instant::now();
    let e = client
        .send(HttpRequest::get(&url).timeout(Duration::from_millis(200)))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        ConnectorError::Timeout {
            after: Duration::from_millis(200)
        }
    );
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert_eq!(sink.exchanges().len(), 2);
    assert!(
        sink.exchanges()[0]
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("timed out")
    );

    // Nothing listens on a port we bound and released.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    sink.clear();
    let e = client
        .send(HttpRequest::post(format!("http://{dead}/x")).not_idempotent())
        .await
        .unwrap_err();
    assert!(matches!(e, ConnectorError::Unavailable { .. }), "{e}");
    // Not sent at all, so even a non-idempotent request is retried.
    assert_eq!(sink.exchanges().len(), 2);
    assert!(
        sink.exchanges()
            .iter()
            .all(|x| x.status.is_none() && x.error.is_some())
    );
}

#[tokio::test]
async fn rate_limit_holds_under_concurrency() {
    let stamps = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let s = stamps.clone();
    let url = serve(Router::new().fallback(any(move || {
        let s = s.clone();
        async move {
            s.lock().unwrap().push(Instant::now());
            "ok"
        }
    })))
    .await;
    let (hub, _) = hub(Arc::new(SystemClock));
    let mut cfg = config("int-rate");
    let (rate, burst) = (20u32, 5u32);
    cfg.rate_limit = Some(RateLimit {
        requests: rate,
        per: Duration::from_secs(1),
        burst,
        max_wait: Duration::from_secs(30),
    });
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        // Every call builds its own client: the bucket is per integration, not per client.
        let client = hub.client(cfg.clone());
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            client.send(HttpRequest::get(url)).await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().status, 200);
    }
    let elapsed = t0.elapsed();
    // 5 at once, then one per 50 ms: 45 × 50 ms.
    assert!(
        elapsed >= Duration::from_millis(2150),
        "took only {elapsed:?}"
    );
    let mut stamps = stamps.lock().unwrap().clone();
    stamps.sort();
    assert_eq!(stamps.len(), 50);
    // In any one-second window the server sees at most burst + rate requests (+3 for uneven
    // network delays on a busy machine); unlimited, all 50 would arrive within milliseconds.
    let max_in_window = stamps
        .iter()
        .map(|t| {
            stamps
                .iter()
                .filter(|u| **u >= *t && **u - *t < Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap();
    assert!(
        max_in_window <= (rate + burst + 1) as usize,
        "{max_in_window} in one second"
    );
}

#[tokio::test]
async fn a_rate_limit_wait_beyond_max_wait_fails_fast() {
    let (url, hits) = fixed(200, &[]).await;
    let (hub, _) = hub(Arc::new(SystemClock));
    let mut cfg = config("int-rate-wait");
    cfg.rate_limit = Some(RateLimit {
        requests: 1,
        per: Duration::from_secs(10),
        burst: 1,
        max_wait: Duration::from_millis(100),
    });
    let client = hub.client(cfg);
    assert!(client.send(HttpRequest::get(&url)).await.is_ok());
    let e = client.send(HttpRequest::get(&url)).await.unwrap_err();
    assert!(
        matches!(e, ConnectorError::RateLimited { retry_after: Some(d) } if d > Duration::from_secs(5)),
        "{e}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert_eq!(client.breaker().consecutive_failures, 0);
}

#[tokio::test]
async fn a_route_limit_holds_its_endpoint_only() {
    let (url, hits) = fixed(200, &[]).await;
    let (hub, _) = hub(Arc::new(SystemClock));
    let mut cfg = config("int-route");
    cfg.rate_limit = Some(RateLimit::per_second(1000));
    cfg.route_limits = vec![RouteLimit {
        path: "/v2/products/stocks",
        limit: RateLimit {
            requests: 1,
            per: Duration::from_secs(60),
            burst: 1,
            max_wait: Duration::from_millis(50),
        },
    }];
    let client = hub.client(cfg.clone());
    let stocks = format!("{url}/v2/products/stocks");
    assert!(client.send(HttpRequest::post(&stocks)).await.is_ok());
    // The endpoint's budget is spent, for every client of the integration…
    let again = hub.client(cfg.clone());
    let e = again
        .send(HttpRequest::post(format!("{stocks}?x=1")))
        .await
        .unwrap_err();
    assert!(matches!(e, ConnectorError::RateLimited { .. }), "{e}");
    // …while its other endpoints go on at the general rate.
    for _ in 0..5 {
        let r = client
            .send(HttpRequest::post(format!("{url}/v3/product/list")))
            .await
            .unwrap();
        assert_eq!(r.status, 200);
    }
    assert_eq!(hits.load(Ordering::SeqCst), 6);
    // A deleted integration's route limiters go with it.
    hub.forget("int-route");
    assert!(
        hub.client(cfg)
            .send(HttpRequest::post(&stocks))
            .await
            .is_ok()
    );
}

const TOKEN: &str = "tok_SUPERSECRET_value_0123456789";
const PASSWORD: &str = "pw-hunter2-xyz";

#[tokio::test]
async fn the_exchange_log_never_holds_a_secret() {
    // The server echoes everything back, the way a careless provider might.
    let url = serve(Router::new().fallback(any(
        |headers: HeaderMap, uri: axum::http::Uri, body: String| async move {
            let hdrs: Vec<String> = headers
                .iter()
                .map(|(k, v)| format!("{k}={}", v.to_str().unwrap_or("")))
                .collect();
            let echo = serde_json::json!({
                "uri": uri.to_string(), "headers": hdrs, "body": body,
                "access_token": TOKEN, "filler": "x".repeat(6000),
            });
            (
                StatusCode::OK,
                [("content-type", "application/json")],
                echo.to_string(),
            )
        },
    )))
    .await;
    let (hub, sink) = hub(Arc::new(SystemClock));
    let mut cfg = config("int-log");
    cfg.secrets = vec![Secret::new(TOKEN), Secret::new(PASSWORD)];
    let client = hub.client(cfg);
    let req = HttpRequest::post(format!("{url}/v1/{TOKEN}/orders"))
        .query(&[
            ("api_key", "plain-api-key-123"),
            ("page", "2"),
            ("q", TOKEN),
        ])
        .bearer(&Secret::new(TOKEN))
        .header("X-API-KEY", "xapikey-abcdefgh-123")
        .header("Api-Key", "apikey-hdr-abcdefgh")
        .header("Client-Id", "42")
        .json(&serde_json::json!({
            "password": PASSWORD,
            "nested": {"client_secret": "cs-secret-zzz", "note": format!("token is {TOKEN}")},
            "amount": 150000
        }))
        .operation("orders.list");
    let r = client.send(req).await.unwrap();
    assert!(
        r.text().contains(TOKEN),
        "the caller still gets the real answer"
    );

    // Failures log too, without the secret.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let e = client
        .send(HttpRequest::get(format!(
            "http://{dead}/p/{TOKEN}?sig={PASSWORD}"
        )))
        .await
        .unwrap_err();
    assert!(
        !e.to_string().contains(TOKEN) && !e.to_string().contains(PASSWORD),
        "{e}"
    );

    let exchanges = sink.exchanges();
    assert_eq!(exchanges.len(), 4);
    let x = &exchanges[0];
    assert_eq!(
        (x.method.as_str(), x.status, x.attempt),
        ("POST", Some(200), 1)
    );
    assert_eq!(x.operation.as_deref(), Some("orders.list"));
    assert_eq!(
        (x.tenant_id.as_str(), x.integration_id.as_str()),
        ("tenant-1", "int-log")
    );
    assert!(
        x.url.contains("page=2") && x.url.contains("api_key=****"),
        "{}",
        x.url
    );
    assert!(x.request_body.as_deref().unwrap().contains("150000"));
    assert!(
        x.response_body.as_deref().unwrap().len() <= 4096 + 40,
        "bodies are truncated"
    );
    assert!(
        x.request_headers
            .iter()
            .any(|(k, v)| k == "client-id" && v == "42")
    );
    for x in &exchanges {
        let all = format!("{x:?} {}", serde_json::to_string(x).unwrap());
        for leaked in [
            TOKEN,
            PASSWORD,
            "plain-api-key-123",
            "xapikey-abcdefgh",
            "apikey-hdr-abcd",
            "cs-secret-zzz",
        ] {
            assert!(
                !all.contains(leaked),
                "{leaked} leaked in attempt {} to {}",
                x.attempt,
                x.url
            );
        }
    }
}
