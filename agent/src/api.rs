//! The daemon's HTTP surface: health, readiness and the JSON API. Handlers
//! never touch the holder table; they send a [`Request`] (`control`) to the event loop,
//! which answers between batches, so the table needs no lock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use bindwatch_core::event::Proto;
use bindwatch_core::holders::WhoQuery;
use bindwatch_core::who::{AnswerSource, WhoAnswer};

use crate::control::{ConflictRecord, RECENT_CONFLICTS, Request};
pub use crate::serve::DEFAULT_LISTEN;

#[derive(Clone)]
pub struct ApiState {
    pub requests: mpsc::Sender<Request>,
    /// Probes attached and holder table built.
    pub ready: Arc<AtomicBool>,
    pub metrics: Option<crate::metrics::SharedMetrics>,
    /// The timeline database, read by `/api/v1/timeline`.
    pub timeline_db: Option<std::path::PathBuf>,
    /// The timeline writer's state, for `/healthz`; None: no timeline.
    pub timeline_health: Option<Arc<crate::store::WriterHealth>>,
    /// Why there is no timeline, when there is none.
    pub timeline_error: Option<Arc<str>>,
    /// The probe set in use (`fexit`, `tracepoint`, `etw`), for `/healthz`.
    pub probes: &'static str,
    /// Where the TCP lifecycle comes from (`sock_ops`, `state_tracepoint`,
    /// `etw`), for `/healthz`.
    pub tcp_lifecycle: &'static str,
    /// When set, every path but `/healthz` and `/readyz` needs
    /// `Authorization: Bearer TOKEN`.
    pub token: Option<Arc<str>>,
}

/// Longest query string accepted; longer is a 400 before any parsing.
pub const MAX_QUERY_BYTES: usize = 2048;
/// Most query parameters accepted.
pub const MAX_PARAMS: usize = 16;
/// How much of a caller's text an error message repeats.
const ECHO_CHARS: usize = 64;

/// A caller's text, cut short for repeating in an error.
fn echo(s: &str) -> String {
    if s.chars().count() <= ECHO_CHARS {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(ECHO_CHARS).collect::<String>())
    }
}

/// Query parameters, with malformed or oversized query strings refused as
/// a JSON 400 (axum's own rejection is plain text).
pub struct Params(pub HashMap<String, String>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Params {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or("");
        if q.len() > MAX_QUERY_BYTES {
            return Err(bad_request(format!(
                "query string of {} bytes; at most {MAX_QUERY_BYTES}",
                q.len()
            )));
        }
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q)
            .map_err(|e| bad_request(format!("malformed query string: {e}")))?;
        if pairs.len() > MAX_PARAMS {
            return Err(bad_request(format!(
                "{} query parameters; at most {MAX_PARAMS}",
                pairs.len()
            )));
        }
        let mut map = HashMap::new();
        for (k, v) in pairs {
            if map.contains_key(&k) {
                return Err(bad(&k, format!("parameter {:?} given twice", echo(&k))));
            }
            map.insert(k, v);
        }
        Ok(Params(map))
    }
}

#[derive(Serialize)]
struct ApiError {
    error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameter: Option<String>,
}

/// Every error the API answers: `{"error": ..., "parameter": ...}`.
fn api_error(status: StatusCode, error: String, parameter: Option<&str>) -> Response {
    let body = ApiError {
        error,
        parameter: parameter.map(echo),
    };
    (status, Json(body)).into_response()
}

fn bad_request(error: String) -> Response {
    api_error(StatusCode::BAD_REQUEST, error, None)
}

fn bad(parameter: &str, error: String) -> Response {
    api_error(StatusCode::BAD_REQUEST, error, Some(parameter))
}

fn unavailable(why: &str) -> Response {
    api_error(StatusCode::SERVICE_UNAVAILABLE, why.to_owned(), None)
}

pub fn router(state: ApiState) -> Router {
    let protected = Router::new()
        .route("/metrics", get(metrics))
        .route("/api/v1/holders", get(holders))
        .route("/api/v1/check", get(check))
        .route("/api/v1/conflicts", get(conflicts))
        .route("/api/v1/timeline", get(timeline))
        .route("/ui", get(ui))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(protected)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> Response {
    let error = format!(
        "no such path {:?}: see /api/v1/holders, /api/v1/conflicts, /api/v1/timeline, /ui, /metrics, /healthz, /readyz",
        echo(uri.path())
    );
    api_error(StatusCode::NOT_FOUND, error, None)
}

async fn method_not_allowed() -> Response {
    api_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "only GET is served".into(),
        None,
    )
}

/// Compares in time independent of where the first difference is.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn require_token(
    State(s): State<ApiState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(token) = &s.token else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if same_secret(g.as_bytes(), token.as_bytes()) => next.run(req).await,
        _ => {
            let mut r = api_error(
                StatusCode::UNAUTHORIZED,
                "this API needs `Authorization: Bearer TOKEN` (http.token_file)".into(),
                None,
            );
            r.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
            r
        }
    }
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    timeline: String,
    probes: &'static str,
    tcp_lifecycle: &'static str,
}

/// Alive: 200 while the daemon runs. `degraded` when the timeline cannot
/// be written (metrics, alerts and the API still work).
async fn healthz(State(s): State<ApiState>) -> Response {
    let timeline = match &s.timeline_health {
        None => format!(
            "unavailable: {}",
            s.timeline_error.as_deref().unwrap_or("no timeline")
        ),
        Some(h) => match h.failure() {
            None => "ok".to_owned(),
            Some(e) => format!("failing: {e}"),
        },
    };
    let status = if timeline == "ok" { "ok" } else { "degraded" };
    Json(Health {
        status,
        timeline,
        probes: s.probes,
        tcp_lifecycle: s.tcp_lifecycle,
    })
    .into_response()
}

async fn metrics(State(s): State<ApiState>) -> Response {
    match &s.metrics {
        Some(m) => {
            let text = m.lock().encode();
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                text,
            )
                .into_response()
        }
        None => (StatusCode::NOT_FOUND, "no metrics\n").into_response(),
    }
}

async fn readyz(State(s): State<ApiState>) -> Response {
    if s.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: probes loading or holder table being built\n",
        )
            .into_response()
    }
}

/// Parses `/api/v1/holders` parameters; Err names the bad one.
pub fn parse_holders_query(params: &HashMap<String, String>) -> Result<WhoQuery, (String, String)> {
    for k in params.keys() {
        if !["port", "proto", "addr", "netns"].contains(&k.as_str()) {
            return Err((
                k.clone(),
                format!(
                    "unknown parameter {:?}: use port, proto, addr, netns",
                    echo(k)
                ),
            ));
        }
    }
    let port = params
        .get("port")
        .ok_or_else(|| ("port".to_owned(), "port is required".to_owned()))?
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| ("port".to_owned(), "port must be 1-65535".to_owned()))?;
    let proto = match params.get("proto") {
        None => None,
        Some(p) => Some(Proto::parse(p).ok_or_else(|| {
            (
                "proto".to_owned(),
                format!("proto {:?} is not tcp or udp", echo(p)),
            )
        })?),
    };
    let addr = match params.get("addr") {
        None => None,
        Some(a) => Some(a.parse::<IpAddr>().map_err(|_| {
            (
                "addr".to_owned(),
                format!("addr {:?} is not an IP address", echo(a)),
            )
        })?),
    };
    let netns = match params.get("netns") {
        None => None,
        Some(n) => Some(n.parse::<u64>().map_err(|_| {
            (
                "netns".to_owned(),
                format!("netns {:?} is not a cookie", echo(n)),
            )
        })?),
    };
    Ok(WhoQuery {
        port,
        proto,
        addr,
        netns,
    })
}

async fn holders(State(s): State<ApiState>, Params(params): Params) -> Response {
    let query = match parse_holders_query(&params) {
        Ok(q) => q,
        Err((p, e)) => return bad(&p, e),
    };
    let (tx, rx) = oneshot::channel();
    if s.requests
        .try_send(Request::Holders(query.clone(), tx))
        .is_err()
    {
        return unavailable("the event loop is busy; retry");
    }
    match rx.await {
        Ok((holders, notes)) => Json(WhoAnswer {
            query,
            source: AnswerSource::Daemon,
            holders,
            notes,
        })
        .into_response(),
        Err(_) => unavailable("the daemon is stopping"),
    }
}

async fn check(State(s): State<ApiState>, Params(params): Params) -> Response {
    let req = match parse_check_query(&params) {
        Ok(q) => q,
        Err((p, e)) => return bad(&p, e),
    };
    let (tx, rx) = oneshot::channel();
    if s.requests.try_send(Request::Check(req, tx)).is_err() {
        return unavailable("the event loop is busy; retry");
    }
    match rx.await {
        Ok(mut answer) => {
            answer.answered_by = bindwatch_core::holders::AnsweredBy::Daemon;
            Json(answer).into_response()
        }
        Err(_) => unavailable("the daemon is stopping"),
    }
}

/// `/api/v1/check`: port (required), addr (the IPv4 wildcard when absent),
/// proto (tcp), reuseaddr, reuseport, v6only (true/false), uid (0), netns
/// (a cookie; the daemon's own when absent). Err names the parameter.
pub fn parse_check_query(
    params: &HashMap<String, String>,
) -> Result<bindwatch_core::holders::BindRequest, (String, String)> {
    const KNOWN: [&str; 8] = [
        "port",
        "addr",
        "proto",
        "reuseaddr",
        "reuseport",
        "v6only",
        "uid",
        "netns",
    ];
    for k in params.keys() {
        if !KNOWN.contains(&k.as_str()) {
            return Err((
                k.clone(),
                format!("unknown parameter {:?}: use {}", echo(k), KNOWN.join(", ")),
            ));
        }
    }
    let port = params
        .get("port")
        .ok_or_else(|| ("port".to_owned(), "port is required".to_owned()))?
        .parse::<u16>()
        .map_err(|_| ("port".to_owned(), "port must be 0-65535".to_owned()))?;
    let flag = |name: &str| -> Result<bool, (String, String)> {
        match params.get(name).map(String::as_str) {
            None | Some("false") | Some("0") => Ok(false),
            Some("true") | Some("1") => Ok(true),
            Some(v) => Err((
                name.to_owned(),
                format!("{name} {:?} is not true or false", echo(v)),
            )),
        }
    };
    let number = |name: &str| -> Result<Option<u64>, (String, String)> {
        params
            .get(name)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    (
                        name.to_owned(),
                        format!("{name} {:?} is not a number", echo(v)),
                    )
                })
            })
            .transpose()
    };
    let proto = match params.get("proto") {
        None => Proto::Tcp,
        Some(p) => Proto::parse(p).ok_or_else(|| {
            (
                "proto".to_owned(),
                format!("proto {:?} is not tcp or udp", echo(p)),
            )
        })?,
    };
    let addr = match params.get("addr") {
        None => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        Some(a) => a.parse::<IpAddr>().map_err(|_| {
            (
                "addr".to_owned(),
                format!("addr {:?} is not an IP address", echo(a)),
            )
        })?,
    };
    let uid = match number("uid")? {
        None => 0,
        Some(u) => {
            u32::try_from(u).map_err(|_| ("uid".to_owned(), "uid is too large".to_owned()))?
        }
    };
    Ok(bindwatch_core::holders::BindRequest {
        proto,
        addr,
        port,
        reuseaddr: flag("reuseaddr")?,
        reuseport: flag("reuseport")?,
        v6only: flag("v6only")?,
        uid,
        netns: number("netns")?,
    })
}

/// `/api/v1/timeline?port=80&at=TIME[&proto=tcp]`: the holders of the
/// port at that moment with their intervals, and the failures around it.
async fn timeline_at(
    s: &ApiState,
    params: &HashMap<String, String>,
    at: &str,
    now: u64,
) -> Response {
    let at_ns = match bindwatch_core::timeline::parse_time(at, now) {
        Ok(t) => t,
        Err(e) => return bad("at", e),
    };
    let filter = match bindwatch_core::timeline::filter_from_params(params, now) {
        Ok(f) => f,
        Err((p, e)) => return bad(&p, e),
    };
    if let Some(extra) = params
        .keys()
        .find(|k| !["port", "proto"].contains(&k.as_str()))
    {
        return bad(
            extra,
            format!("{extra:?} does not go with at: use port and proto"),
        );
    }
    let Some(port) = filter.port else {
        return bad("port", "at needs a port".to_owned());
    };
    let Some(db) = s.timeline_db.clone() else {
        return unavailable("no timeline: the state directory is not writable");
    };
    let proto = filter.proto.clone();
    let res = tokio::task::spawn_blocking(move || {
        crate::store::read_at(&db, port, proto.as_deref(), at_ns).map_err(|e| e.to_string())
    })
    .await;
    match res {
        Ok(Ok(answer)) => Json(answer).into_response(),
        Ok(Err(e)) => unavailable(&e),
        Err(e) => unavailable(&e.to_string()),
    }
}

/// Timeline records for query parameters; Err is the response to send (a
/// 400 naming the parameter, or a 503).
async fn read_timeline(
    s: &ApiState,
    params: &HashMap<String, String>,
    now: u64,
) -> Result<
    (
        bindwatch_core::timeline::TimelineFilter,
        Vec<bindwatch_core::timeline::Record>,
    ),
    Response,
> {
    let filter =
        bindwatch_core::timeline::filter_from_params(params, now).map_err(|(p, e)| bad(&p, e))?;
    let Some(db) = s.timeline_db.clone() else {
        return Err(unavailable(
            "no timeline: the state directory is not writable",
        ));
    };
    let f = filter.clone();
    let res =
        tokio::task::spawn_blocking(move || crate::store::read(&db, &f).map_err(|e| e.to_string()))
            .await;
    match res {
        Ok(Ok(records)) => Ok((filter, records)),
        Ok(Err(e)) => Err(unavailable(&e)),
        Err(e) => Err(unavailable(&e.to_string())),
    }
}

/// The timeline picture with the database's current content (reloads
/// itself every 10 s); same parameters as /api/v1/timeline, `since`
/// defaulting to one hour.
async fn ui(State(s): State<ApiState>, Params(mut params): Params) -> Response {
    params.entry("since".into()).or_insert_with(|| "1h".into());
    let now = bindwatch_core::clock::now_unix_ns();
    let at_ns = match params
        .remove("at")
        .map(|a| bindwatch_core::timeline::parse_time(&a, now))
    {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => return bad("at", e),
    };
    let (filter, records) = match read_timeline(&s, &params, now).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let title = match filter.port {
        Some(p) => format!("bindwatch: port {p}"),
        None => "bindwatch".to_owned(),
    };
    let html = crate::report::render_html(
        &title,
        &records,
        filter.since_ns.unwrap_or(0),
        filter.until_ns.unwrap_or(now),
        at_ns,
        Some(10),
    );
    axum::response::Html(html).into_response()
}

#[derive(Serialize)]
struct Timeline {
    records: Vec<bindwatch_core::timeline::Record>,
}

async fn timeline(State(s): State<ApiState>, Params(mut params): Params) -> Response {
    let now = bindwatch_core::clock::now_unix_ns();
    if let Some(at) = params.remove("at") {
        return timeline_at(&s, &params, &at, now).await;
    }
    match read_timeline(&s, &params, now).await {
        Ok((_, records)) => Json(Timeline { records }).into_response(),
        Err(r) => r,
    }
}

#[derive(Serialize)]
struct Conflicts {
    conflicts: Vec<ConflictRecord>,
}

async fn conflicts(State(s): State<ApiState>, Params(params): Params) -> Response {
    for k in params.keys() {
        if !["limit", "port"].contains(&k.as_str()) {
            return bad(
                k,
                format!("unknown parameter {:?}: use limit, port", echo(k)),
            );
        }
    }
    let limit = match params.get("limit").map(|l| l.parse::<usize>()) {
        None => 100,
        Some(Ok(n)) if (1..=RECENT_CONFLICTS).contains(&n) => n,
        Some(_) => {
            return bad("limit", format!("limit must be 1-{RECENT_CONFLICTS}"));
        }
    };
    let port = match params.get("port").map(|p| p.parse::<u16>()) {
        None => None,
        Some(Ok(p)) => Some(p),
        Some(Err(_)) => return bad("port", "port must be 0-65535".to_owned()),
    };
    let (tx, rx) = oneshot::channel();
    if s.requests
        .try_send(Request::Conflicts {
            limit,
            port,
            reply: tx,
        })
        .is_err()
    {
        return unavailable("the event loop is busy; retry");
    }
    match rx.await {
        Ok(conflicts) => Json(Conflicts { conflicts }).into_response(),
        Err(_) => unavailable("the daemon is stopping"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn check_query_names_the_bad_parameter() {
        let q =
            parse_check_query(&p(&[("port", "80"), ("reuseport", "true"), ("uid", "33")])).unwrap();
        assert_eq!(
            (q.port, q.reuseport, q.uid, q.proto),
            (80, true, 33, Proto::Tcp)
        );
        assert!(q.addr.is_unspecified());
        for (params, name) in [
            (p(&[]), "port"),
            (p(&[("port", "70000")]), "port"),
            (p(&[("port", "80"), ("reuseaddr", "yes")]), "reuseaddr"),
            (p(&[("port", "80"), ("uid", "-1")]), "uid"),
            (p(&[("port", "80"), ("uid", "99999999999")]), "uid"),
            (p(&[("port", "80"), ("netns", "ns1")]), "netns"),
            (p(&[("port", "80"), ("addr", "localhost")]), "addr"),
            (p(&[("port", "80"), ("colour", "red")]), "colour"),
        ] {
            assert_eq!(parse_check_query(&params).unwrap_err().0, name);
        }
    }

    #[test]
    fn holders_query_names_the_bad_parameter() {
        let q = parse_holders_query(&p(&[("port", "80"), ("proto", "udp")])).unwrap();
        assert_eq!((q.port, q.proto), (80, Some(Proto::Udp)));
        for (params, name) in [
            (p(&[]), "port"),
            (p(&[("port", "x")]), "port"),
            (p(&[("port", "80"), ("proto", "sctp")]), "proto"),
            (p(&[("port", "80"), ("addr", "nope")]), "addr"),
            (p(&[("port", "80"), ("colour", "red")]), "colour"),
        ] {
            assert_eq!(parse_holders_query(&params).unwrap_err().0, name);
        }
    }
}
