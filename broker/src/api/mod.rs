//! The admin HTTP/JSON API (axum), `/metrics` and `/openapi.json`, and the
//! daemon that serves them ([`start`]).
//!
//! Three kinds of caller: administrators and clients present the admin
//! bearer token; GPU servers present the shared server secret to register
//! and heartbeat; `/healthz`, `/metrics`, `/openapi.json` and
//! `/v1/public-key` are open. Bodies are parsed here so that a malformed one
//! gets a 400 with serde's reason; every error is `{"error", "code"}` JSON.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;

use crate::config::{load_or_create_signing_key, BrokerConfig, ConfigError};
use crate::control::{Broker, BrokerError, Registration};
use crate::inventory::ServerState;
use crate::lease::LeaseRequest;
use crate::store::StoreError;
use crate::tenant::Quota;

/// The error code of an answer from a broker that is not the leader: the
/// client should try the next broker of its list.
pub const NOT_LEADER: &str = "not_leader";

/// The OpenAPI document, kept beside this file.
pub const OPENAPI: &str = include_str!("openapi.json");

struct App {
    broker: Arc<Broker>,
    admin_token: String,
    server_secret: String,
}

/// An error as the API answers it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl From<BrokerError> for ApiError {
    fn from(e: BrokerError) -> Self {
        let (status, code) = match &e {
            BrokerError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            BrokerError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            BrokerError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            BrokerError::QuotaExceeded(_) => (StatusCode::FORBIDDEN, "quota_exceeded"),
            BrokerError::NoCapacity(_) => (StatusCode::SERVICE_UNAVAILABLE, "no_capacity"),
            BrokerError::LeaseEnded { .. } => (StatusCode::GONE, "lease_ended"),
            BrokerError::Store(StoreError::NotLeader) => (StatusCode::SERVICE_UNAVAILABLE, NOT_LEADER),
            BrokerError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "store"),
            BrokerError::KeyMismatch(_) => (StatusCode::INTERNAL_SERVER_ERROR, "signing_key"),
            BrokerError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        if status.is_server_error() {
            tracing::error!("{e}");
        }
        ApiError::new(status, code, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message, "code": self.code }))).into_response()
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

fn parse<T: DeserializeOwned>(body: &Bytes, what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_json",
            format!("request body is not a valid {what}: {e}"),
        )
    })
}

fn lease_id(text: &str) -> Result<u64, ApiError> {
    text.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("{text:?} is not a lease id (a positive whole number)"),
        )
    })
}

/// Compares without an early exit, so timing does not leak the token.
fn same_secret(given: &str, expected: &str) -> bool {
    given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

impl App {
    /// Refuses every call on the pool's state once this broker is not the
    /// leader: its memory may be behind the new leader's, and it may not
    /// write.
    fn leading(&self) -> Result<(), ApiError> {
        if self.broker.is_leader() {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                NOT_LEADER,
                "this broker lost its leadership and serves nothing more; send requests to the pool's other brokers (list them all, comma-separated, in the broker URL)",
            ))
        }
    }

    fn admin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        match bearer(headers) {
            Some(t) if same_secret(t, &self.admin_token) => self.leading(),
            Some(_) => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "wrong admin token; send Authorization: Bearer <the broker's admin_token>",
            )),
            None => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "no admin token; send Authorization: Bearer <the broker's admin_token> (the CLI reads GPUPOOL_BROKER_ADMIN_TOKEN)",
            )),
        }
    }

    fn server(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        match bearer(headers) {
            Some(t) if same_secret(t, &self.server_secret) => self.leading(),
            _ => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "GPU servers authenticate with Authorization: Bearer <the broker's server_secret>; it is missing or wrong",
            )),
        }
    }
}

/// The API's routes over a broker.
pub fn router(broker: Arc<Broker>, admin_token: String, server_secret: String) -> Router {
    let app = Arc::new(App {
        broker,
        admin_token,
        server_secret,
    });
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .route("/v1/public-key", get(public_key))
        .route("/v1/servers/register", post(register))
        .route("/v1/servers/{name}/heartbeat", post(heartbeat))
        .route("/v1/pools", get(pools))
        .route("/v1/servers", get(servers))
        .route("/v1/servers/{name}", get(server))
        .route("/v1/servers/{name}/cordon", post(cordon))
        .route("/v1/servers/{name}/uncordon", post(uncordon))
        .route("/v1/servers/{name}/drain", post(drain))
        .route("/v1/gpus", get(gpus))
        .route("/v1/slices", get(slices))
        .route("/v1/leases", get(leases).post(request_lease))
        .route("/v1/leases/{id}", get(lease).delete(release))
        .route("/v1/leases/{id}/renew", post(renew))
        .route("/v1/leases/{id}/explain", get(explain_lease))
        .route("/v1/explain", post(explain))
        .route("/v1/tenants", get(tenants))
        .route("/v1/tenants/{name}", get(tenant))
        .route("/v1/tenants/{name}/quota", put(set_quota))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint; see /openapi.json for the API",
            )
        })
        .with_state(app)
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.broker.render_metrics(),
    )
}

async fn public_key(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    Json(json!({ "public_key": app.broker.public_key_text() }))
}

async fn register(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    blocking(move || {
        let _span = tracing::info_span!("api", call = "register").entered();
        app.server(&headers)?;
        let registration: Registration = parse(&body, "server registration")?;
        Ok(Json(app.broker.register(registration)?))
    })
    .await
}

async fn heartbeat(State(app): State<Arc<App>>, headers: HeaderMap, Path(name): Path<String>) -> Response {
    blocking(move || {
        let _span = tracing::info_span!("api", call = "heartbeat", server = %name).entered();
        app.server(&headers)?;
        Ok(Json(app.broker.heartbeat(&name)?))
    })
    .await
}

/// Runs a broker call off the async workers: it takes the state lock and
/// waits for the store's fsync.
async fn blocking<T: Serialize + Send + 'static>(call: impl FnOnce() -> ApiResult<T> + Send + 'static) -> Response {
    match tokio::task::spawn_blocking(call).await {
        Ok(result) => respond(result),
        Err(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the request's handler failed: {e}"),
        )
        .into_response(),
    }
}

fn respond<T: Serialize>(result: ApiResult<T>) -> Response {
    match result {
        Ok(json) => json.into_response(),
        Err(e) => e.into_response(),
    }
}

macro_rules! admin_handler {
    ($name:ident, |$app:ident $(, $arg:ident : $ty:ty)*| $body:expr) => {
        async fn $name(State($app): State<Arc<App>>, headers: HeaderMap $(, $arg: $ty)*) -> Response {
            blocking(move || {
                let _span = tracing::info_span!("api", call = stringify!($name)).entered();
                $app.admin(&headers)?;
                Ok(Json($body))
            })
            .await
        }
    };
}

admin_handler!(pools, |app| vec![app.broker.pool()]);
admin_handler!(servers, |app| app.broker.servers());
admin_handler!(server, |app, name: Path<String>| app.broker.server(&name)?);
admin_handler!(cordon, |app, name: Path<String>| app
    .broker
    .set_admin_state(&name, ServerState::Cordoned)?);
admin_handler!(uncordon, |app, name: Path<String>| app
    .broker
    .set_admin_state(&name, ServerState::Up)?);
admin_handler!(drain, |app, name: Path<String>| app
    .broker
    .set_admin_state(&name, ServerState::Draining)?);
admin_handler!(gpus, |app| app.broker.gpus());
admin_handler!(slices, |app| app.broker.slices());
admin_handler!(leases, |app| app.broker.leases());
admin_handler!(request_lease, |app, body: Bytes| {
    let request: LeaseRequest = parse(&body, "lease request")?;
    app.broker.request(request)?
});
admin_handler!(lease, |app, id: Path<String>| app.broker.lease(lease_id(&id)?)?);
admin_handler!(release, |app, id: Path<String>| app.broker.release(lease_id(&id)?)?);
admin_handler!(renew, |app, id: Path<String>| app.broker.renew(lease_id(&id)?)?);
admin_handler!(explain_lease, |app, id: Path<String>| app
    .broker
    .explain_lease(lease_id(&id)?)?);
admin_handler!(explain, |app, body: Bytes| {
    let request: LeaseRequest = parse(&body, "lease request")?;
    app.broker.explain(request)?
});
admin_handler!(tenants, |app| app.broker.tenants());
admin_handler!(tenant, |app, name: Path<String>| app.broker.tenant(&name)?);
admin_handler!(set_quota, |app, name: Path<String>, body: Bytes| {
    let quota: Quota = parse(&body, "quota")?;
    app.broker.set_quota(&name, quota)?
});

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
    #[error("cannot start the broker's runtime: {0}")]
    Runtime(std::io::Error),
}

/// A broker serving its API on its own runtime; stops when dropped.
pub struct RunningBroker {
    pub addr: SocketAddr,
    pub broker: Arc<Broker>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for RunningBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningBroker")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Why [`RunningBroker::wait`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopping {
    /// SIGINT or SIGTERM.
    Signal,
    /// The broker lost its leadership of a replicated store; it answers
    /// `503 not_leader` from now on.
    LostLeadership,
}

impl RunningBroker {
    /// Serves until the process gets SIGINT or SIGTERM, or the broker loses
    /// its leadership (looked at every 50 ms).
    pub fn wait(&self) -> Stopping {
        let Some(rt) = &self.runtime else {
            return Stopping::Signal;
        };
        let broker = Arc::clone(&self.broker);
        rt.block_on(async {
            let deposed = async {
                let mut every = tokio::time::interval(Duration::from_millis(50));
                while broker.is_leader() {
                    every.tick().await;
                }
            };
            tokio::select! {
                _ = wait_for_signal() => Stopping::Signal,
                _ = deposed => Stopping::LostLeadership,
            }
        })
    }

    /// Serves until the process gets SIGINT or SIGTERM.
    pub fn wait_for_signal(&self) {
        if let Some(rt) = &self.runtime {
            rt.block_on(wait_for_signal());
        }
    }

    /// Keeps serving (`503 not_leader`, once deposed) for `period`, or until
    /// SIGINT or SIGTERM.
    pub fn linger(&self, period: Duration) {
        if let Some(rt) = &self.runtime {
            rt.block_on(async {
                tokio::select! {
                    _ = wait_for_signal() => {}
                    _ = tokio::time::sleep(period) => {}
                }
            });
        }
    }

    /// Stops serving; the store is closed once every task has let go of it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

impl Drop for RunningBroker {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Returns at SIGINT or SIGTERM.
async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let terminated = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminated => {}
    }
}

/// Opens the store and key, binds the listener, and serves the API with the
/// timing rules checked in the background.
pub fn start(config: &BrokerConfig) -> Result<RunningBroker, StartError> {
    let settings = config.settings()?;
    let signer = load_or_create_signing_key(&config.signing_key_file)?;
    let store = config.open_store()?;
    let tick_every = (settings.heartbeat_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let broker = Arc::new(Broker::open(settings, store, signer)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("gpupool-broker")
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    let listener = std::net::TcpListener::bind(&config.listen).map_err(|source| StartError::Listen {
        addr: config.listen.clone(),
        source,
    })?;
    let addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: config.listen.clone(),
        source,
    })?;
    listener.set_nonblocking(true).map_err(|source| StartError::Listen {
        addr: config.listen.clone(),
        source,
    })?;
    let app = router(
        Arc::clone(&broker),
        config.admin_token.clone(),
        config.server_secret.clone(),
    );
    let listener = {
        let _guard = runtime.enter();
        tokio::net::TcpListener::from_std(listener).map_err(|source| StartError::Listen {
            addr: config.listen.clone(),
            source,
        })?
    };
    runtime.spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("API server stopped: {e}");
        }
    });
    let ticking = Arc::clone(&broker);
    runtime.spawn(async move {
        let mut interval = tokio::time::interval(tick_every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let broker = Arc::clone(&ticking);
            match tokio::task::spawn_blocking(move || broker.tick()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!("checking heartbeats and lease expiry failed: {e}"),
                Err(e) => tracing::error!("checking heartbeats and lease expiry stopped: {e}"),
            }
        }
    });
    tracing::info!(%addr, "broker listening");
    Ok(RunningBroker {
        addr,
        broker,
        runtime: Some(runtime),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_document_covers_every_route() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
        assert_eq!(doc["openapi"], "3.0.3");
        let routes = [
            ("get", "/healthz"),
            ("get", "/openapi.json"),
            ("get", "/metrics"),
            ("get", "/v1/public-key"),
            ("post", "/v1/servers/register"),
            ("post", "/v1/servers/{name}/heartbeat"),
            ("get", "/v1/pools"),
            ("get", "/v1/servers"),
            ("get", "/v1/servers/{name}"),
            ("post", "/v1/servers/{name}/cordon"),
            ("post", "/v1/servers/{name}/uncordon"),
            ("post", "/v1/servers/{name}/drain"),
            ("get", "/v1/gpus"),
            ("get", "/v1/slices"),
            ("get", "/v1/leases"),
            ("post", "/v1/leases"),
            ("get", "/v1/leases/{id}"),
            ("delete", "/v1/leases/{id}"),
            ("post", "/v1/leases/{id}/renew"),
            ("get", "/v1/leases/{id}/explain"),
            ("post", "/v1/explain"),
            ("get", "/v1/tenants"),
            ("get", "/v1/tenants/{name}"),
            ("put", "/v1/tenants/{name}/quota"),
        ];
        for (method, path) in routes {
            assert!(
                doc["paths"][path][method].is_object(),
                "{method} {path} missing from openapi.json"
            );
        }
        assert_eq!(doc["paths"].as_object().map(|p| p.len()), Some(22));
        // Every schema reference resolves.
        let text = OPENAPI;
        for part in text.split("\"$ref\": \"#/components/schemas/").skip(1) {
            let name = part.split('"').next().unwrap_or_default();
            assert!(doc["components"]["schemas"][name].is_object(), "dangling $ref {name}");
        }
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("ab", "abc"));
        assert!(!same_secret("", "abc"));
    }
}
