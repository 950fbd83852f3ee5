//! Any member answers any request: this middleware (inside authentication) sends a
//! request about another member's instance or operation to that member, places new
//! instances, and gathers `GET /1.0/instances` from every member. A request another member
//! forwarded is answered here, never forwarded again.
//!
//! Listing never waits more than [`LIST_TIMEOUT`] for a member: the instances of a member
//! that is offline or does not answer in time are listed from the database with status
//! `Error` and their location, as Incus does.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::future::join_all;
use http_body_util::BodyExt;
use serde_json::Value;

use super::forward::FORWARDED;
use super::{Cluster, ClusterError, Target};
use crate::api::auth::Caller;
use crate::api::{ApiError, AppState};

/// How long a listing waits for each member.
pub const LIST_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest instance-creation request read here to place it.
const MAX_CREATE_BODY: usize = 1 << 20;

/// The middleware.
pub async fn route(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let cluster = state.cluster.clone();
    let Some(me) = cluster.me() else {
        return next.run(req).await;
    };
    if req.headers().contains_key(FORWARDED) {
        if matches!(req.extensions().get::<Caller>(), Some(Caller::Member)) {
            if req.method() == Method::POST && req.uri().path() == "/1.0/instances" {
                // Placed here by another member: the image may have to come first.
                return create_here(&state, &me, req, next)
                    .await
                    .unwrap_or_else(IntoResponse::into_response);
            }
            return next.run(req).await;
        }
        // Only members forward: anyone else's header means nothing.
        req.headers_mut().remove(FORWARDED);
    }
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let result = match (req.method().clone(), segments.as_slice()) {
        (Method::GET, ["1.0", "instances"]) => list(&state, &me, req, next).await,
        (Method::GET, ["1.0", "operations"]) if admin(&req) => {
            list_operations(&state, &me, req, next).await
        }
        (Method::POST, ["1.0", "instances"]) => create(&state, &me, req, next).await,
        (method, ["1.0", "instances", name, rest @ ..]) => {
            let name = percent_encoding::percent_decode_str(name)
                .decode_utf8_lossy()
                .into_owned();
            match cluster.store().instance_location(&name).await {
                Ok(Some(member)) if member != me => forward(&cluster, &member, req).await,
                Ok(_) if method == Method::POST && rest.is_empty() => {
                    rename(&state, &me, &name, req, next).await
                }
                Ok(_) => Ok(next.run(req).await),
                Err(e) => Err(ClusterError::from(e).into()),
            }
        }
        (Method::POST, ["1.0", "profiles"]) => profile_change(&state, None, req, next).await,
        (m, ["1.0", "profiles", name]) if m != Method::GET && m != Method::HEAD => {
            let name = percent_encoding::percent_decode_str(name)
                .decode_utf8_lossy()
                .into_owned();
            profile_change(&state, Some(name), req, next).await
        }
        // Reads see the cluster's profiles as they are now, not as of the last heartbeat.
        (_, ["1.0", "profiles", ..]) => match cluster.sync_profiles().await {
            Ok(()) => Ok(next.run(req).await),
            Err(e) => Err(e.into()),
        },
        (_, ["1.0", "operations", id, ..]) => {
            let id = id.to_string();
            operation(&state, &id, req, next).await
        }
        _ => Ok(next.run(req).await),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

impl From<ClusterError> for ApiError {
    fn from(e: ClusterError) -> Self {
        match e {
            ClusterError::Invalid(m) => ApiError::BadRequest(m),
            ClusterError::Conflict(m) => ApiError::Conflict(m),
            ClusterError::NotFound(m) => ApiError::NotFound(m),
            ClusterError::Forbidden(m) => ApiError::Forbidden(m),
            e @ (ClusterError::Unavailable(_)
            | ClusterError::Forward(_)
            | ClusterError::Place(_)) => ApiError::Unavailable(e.to_string()),
            ClusterError::Remote(r) => r.into(),
            e @ ClusterError::Db(_) => ApiError::Internal(e.to_string()),
        }
    }
}

/// Whether the request's caller administers the server (else its restrictions travel
/// with a forwarded request).
fn admin(req: &Request) -> bool {
    req.extensions().get::<Caller>().is_some_and(Caller::admin)
}

/// `POST /1.0/instances/NAME` here (a rename, or a move): the new name is reserved for
/// this member cluster-wide first, and given back if the rename is refused.
async fn rename(
    state: &AppState,
    me: &str,
    name: &str,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let cluster = &state.cluster;
    let (parts, body) = req.into_parts();
    let bytes = read_body(body, MAX_CREATE_BODY).await?;
    let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let new = value["name"].as_str().unwrap_or_default().to_string();
    let req = Request::from_parts(parts, Body::from(bytes));
    if new.is_empty() || new == name {
        return Ok(next.run(req).await);
    }
    let offline = cluster.offline_after_ms().await;
    cluster
        .store()
        .place_instance(&new, Some(me), offline)
        .await
        .map_err(ClusterError::from)?;
    let resp = next.run(req).await;
    if (resp.status().is_client_error() || resp.status().is_server_error())
        && let Err(e) = cluster.store().remove_instance(&new, me).await
    {
        tracing::warn!(instance = %new, error = %e, "reserved name not given back");
    }
    Ok(resp)
}

/// Send `req` to `member` and remember the operation its answer starts, if any.
async fn forward(cluster: &Cluster, member: &str, req: Request) -> Result<Response, ApiError> {
    let target = cluster.target(member).await?;
    let client = peer_client(cluster)?;
    let restricted = !admin(&req);
    let resp = client
        .forward(&target, req, restricted)
        .await
        .map_err(ClusterError::from)?;
    if let Some(id) = resp
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|l| l.strip_prefix("/1.0/operations/"))
    {
        cluster.record_operation(id, member);
    }
    Ok(resp)
}

/// A profile created, changed, renamed or deleted: applied here (to this member's
/// instances), then recorded in the store, from which every other member applies it on
/// its next heartbeat.
async fn profile_change(
    state: &AppState,
    name: Option<String>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let cluster = &state.cluster;
    let (parts, body) = req.into_parts();
    let bytes = read_body(body, MAX_CREATE_BODY).await?;
    let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    // The names the change touches: the path's, and a new one (create, rename).
    let mut names: Vec<String> = name.into_iter().collect();
    if parts.method == Method::POST
        && let Some(n) = value["name"].as_str()
    {
        names.push(n.to_string());
    }
    let order = cluster.lock_profiles().await;
    // The change applies to the cluster's profiles as they are now.
    cluster.sync_profiles_locked(&order).await?;
    let resp = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    if resp.status().is_success() {
        for n in names {
            cluster.push_profile(&n).await?;
        }
    }
    Ok(resp)
}

/// `/1.0/operations/ID…`: here if it is ours, else on the member that has it.
async fn operation(
    state: &AppState,
    id: &str,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let cluster = &state.cluster;
    if state.ops.get(id).is_ok() {
        return Ok(next.run(req).await);
    }
    if let Some(member) = cluster.operation_owner(id) {
        return forward(cluster, &member, req).await;
    }
    // Asked of a member that did not start it: find who has it. Only for administrators
    // (other members' operations include their tokens) and only for operation ids.
    if !admin(&req) || uuid::Uuid::parse_str(id).is_err() {
        return Ok(next.run(req).await);
    }
    let client = peer_client(cluster)?;
    let me = cluster.me().unwrap_or_default();
    let others: Vec<Target> = online_targets(cluster)
        .into_iter()
        .filter(|t| t.name != me)
        .collect();
    let probes = others.iter().map(|t| {
        let client = client.clone();
        let path = format!("/1.0/operations/{id}");
        async move {
            client
                .get_json(t, &path, LIST_TIMEOUT)
                .await
                .ok()
                .map(|_| t.name.clone())
        }
    });
    match join_all(probes).await.into_iter().flatten().next() {
        Some(member) => {
            cluster.record_operation(id, &member);
            forward(cluster, &member, req).await
        }
        None => Ok(next.run(req).await),
    }
}

/// The client for the other members (this member is clustered: the middleware checked).
fn peer_client(cluster: &Cluster) -> Result<super::PeerClient, ApiError> {
    cluster
        .client()
        .ok_or_else(|| ApiError::Unavailable("not clustered".into()))
}

fn online_targets(cluster: &Cluster) -> Vec<Target> {
    cluster
        .cached_members()
        .into_iter()
        .filter(|m| m.online)
        .map(|m| Target {
            name: m.name,
            address: m.address,
            fingerprint: m.fingerprint,
        })
        .collect()
}

/// `POST /1.0/instances`: place the instance (the `target` member, or the least loaded
/// online one), then create it here or on that member. A failed creation gives its
/// reservation back.
async fn create(
    state: &AppState,
    me: &str,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let cluster = &state.cluster;
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|t| t.starts_with("application/json"));
    if !json {
        // A backup to import: it lands here.
        return Ok(next.run(req).await);
    }
    let (parts, body) = req.into_parts();
    let bytes = read_body(body, MAX_CREATE_BODY).await?;
    let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let name = value["name"].as_str().unwrap_or_default().to_string();
    let query: HashMap<String, String> = parts
        .uri
        .query()
        .map(|q| {
            url_pairs(q)
                .into_iter()
                .collect::<HashMap<String, String>>()
        })
        .unwrap_or_default();
    let target = query.get("target").filter(|t| !t.is_empty()).cloned();
    if name.is_empty() {
        // The member names it (and the name is recorded when it is made): only here.
        if target.as_deref().is_some_and(|t| t != me) {
            return Err(ApiError::BadRequest(
                "give the instance a name to create it on another member".into(),
            ));
        }
        return Ok(next
            .run(Request::from_parts(parts, Body::from(bytes)))
            .await);
    }
    let offline = cluster.offline_after_ms().await;
    let member = cluster
        .store()
        .place_instance(&name, target.as_deref(), offline)
        .await
        .map_err(ClusterError::from)?;
    let resp = if member == me {
        match ensure_image(state, me, &value).await {
            Ok(()) => Ok(next
                .run(Request::from_parts(parts, Body::from(bytes)))
                .await),
            Err(e) => Err(e),
        }
    } else {
        let req = Request::from_parts(parts, Body::from(bytes));
        forward(cluster, &member, req).await
    };
    // Refused: the name is free again. Another member that did not answer may be creating
    // it: the reservation stays, and that member's periodic sync drops it if nothing came
    // of it.
    let failed = match &resp {
        Ok(r) => r.status().is_client_error() || r.status().is_server_error(),
        Err(_) => member == me,
    };
    if failed && let Err(e) = cluster.store().remove_instance(&name, &member).await {
        tracing::warn!(instance = %name, error = %e, "placement not given back");
    }
    resp
}

/// A creation another member placed here: its image first, then the creation.
async fn create_here(
    state: &AppState,
    me: &str,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let bytes = read_body(body, MAX_CREATE_BODY).await?;
    let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    ensure_image(state, me, &value).await?;
    Ok(next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await)
}

/// Copy the image a creation request names from a member that has it, when this member
/// lacks it (built-in sources are built here; remote servers' images are fetched here).
async fn ensure_image(state: &AppState, me: &str, body: &Value) -> Result<(), ApiError> {
    let source = &body["source"];
    let kind = source["type"].as_str().unwrap_or("image");
    let server = source["server"].as_str().unwrap_or_default();
    if kind != "image" || !server.is_empty() {
        return Ok(());
    }
    let fingerprint = source["fingerprint"].as_str().unwrap_or_default();
    let alias = source["alias"].as_str().unwrap_or_default();
    let local = state.cluster.local();
    if !fingerprint.is_empty() {
        if !crate::db::images::find_prefix(local, fingerprint)
            .await
            .map_err(ClusterError::from)?
            .is_empty()
        {
            return Ok(());
        }
    } else if alias.is_empty()
        || crate::images::BUILTIN.contains(&alias)
        || alias.starts_with("debian/")
        || crate::db::images::resolve_alias(local, alias)
            .await
            .map_err(ClusterError::from)?
            .is_some()
    {
        return Ok(());
    }
    let store = state.cluster.store();
    let client = peer_client(&state.cluster)?;
    let Some((fingerprint, holder)) = locate_image(state, me, fingerprint, alias).await? else {
        // Unknown everywhere: the creation says so.
        return Ok(());
    };
    let holder = &holder;
    tracing::info!(image = %fingerprint, from = %holder.name, "copying an image from another member");
    let resp = client
        .get_stream(holder, &format!("/1.0/images/{fingerprint}/export"))
        .await
        .map_err(ClusterError::from)?;
    if !resp.status().is_success() {
        return Err(ApiError::Unavailable(format!(
            "member {} could not export image {fingerprint}: {}",
            holder.name,
            resp.status()
        )));
    }
    // An image file, never JSON (which would publish an instance of ours), and its
    // fingerprint checked against what we asked for.
    let content_type = resp.headers().get(header::CONTENT_TYPE).cloned().unwrap_or(
        axum::http::HeaderValue::from_static("application/octet-stream"),
    );
    let ct = content_type
        .to_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if !(ct.starts_with("application/octet-stream") || ct.starts_with("multipart/form-data")) {
        return Err(ApiError::Unavailable(format!(
            "member {} sent image {fingerprint} as {ct}",
            holder.name
        )));
    }
    let mut headers = axum::http::HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, content_type);
    let expected = axum::http::HeaderValue::from_str(&fingerprint)
        .map_err(|e| ApiError::BadRequest(format!("image fingerprint: {e}")))?;
    headers.insert("x-incus-fingerprint", expected);
    let answer = crate::api::images_transfer::post_images(
        State(state.clone()),
        headers,
        Body::new(resp.into_body()),
    )
    .await?;
    let status = answer.status();
    let answer: Value =
        serde_json::from_slice(&read_body(answer.into_body(), MAX_CREATE_BODY).await?)
            .unwrap_or_default();
    if !status.is_success() {
        return Err(ApiError::Unavailable(format!(
            "importing image {fingerprint} from {}: {}",
            holder.name,
            answer["error"].as_str().unwrap_or_default()
        )));
    }
    if let Some(id) = answer["operation"]
        .as_str()
        .and_then(|o| o.strip_prefix("/1.0/operations/"))
    {
        let done = state.ops.wait(id, Some(Duration::from_secs(600))).await?;
        if done.status_code != ctl_api::StatusCode::Success {
            return Err(ApiError::Unavailable(format!(
                "importing image {fingerprint} from {}: {}",
                holder.name, done.err
            )));
        }
    }
    if !alias.is_empty()
        && let Err(e) = state.images.create_alias(alias, &fingerprint, "").await
    {
        tracing::warn!(%alias, error = %e, "alias of a copied image");
    }
    if let Err(e) = store.add_image(&fingerprint, me, &[]).await {
        tracing::warn!(image = %fingerprint, error = %e, "copied image not recorded");
    }
    Ok(())
}

/// The full fingerprint of the image `fingerprint` (or `alias`) names, and an online
/// member that has it: as the store records it, else as the members answer (a member
/// records a new image a moment after it has it).
async fn locate_image(
    state: &AppState,
    me: &str,
    fingerprint: &str,
    alias: &str,
) -> Result<Option<(String, Target)>, ApiError> {
    let store = state.cluster.store();
    let known = if fingerprint.is_empty() {
        store
            .resolve_image_alias(alias)
            .await
            .map_err(ClusterError::from)?
    } else {
        Some(fingerprint.to_string())
    };
    let others: Vec<Target> = online_targets(&state.cluster)
        .into_iter()
        .filter(|t| t.name != me)
        .collect();
    let mut holders = Vec::new();
    if let Some(fp) = &known {
        holders = store.image_holders(fp).await.map_err(ClusterError::from)?;
        if let Some(t) = others.iter().find(|t| holders.contains(&t.name)) {
            return Ok(Some((fp.clone(), t.clone())));
        }
    }
    let client = peer_client(&state.cluster)?;
    let path = match &known {
        Some(fp) => format!("/1.0/images/{fp}"),
        None => format!(
            "/1.0/images/aliases/{}",
            percent_encoding::utf8_percent_encode(alias, percent_encoding::NON_ALPHANUMERIC)
        ),
    };
    for t in &others {
        if let Ok(v) = client.get_json(t, &path, LIST_TIMEOUT).await {
            let fp = match &known {
                Some(_) => v["fingerprint"].as_str(),
                None => v["target"].as_str(),
            };
            if let Some(fp) = fp.filter(|f| !f.is_empty()) {
                return Ok(Some((fp.to_string(), t.clone())));
            }
        }
    }
    if holders.is_empty() {
        return Ok(None);
    }
    Err(ApiError::Unavailable(format!(
        "image {} is only on offline members ({})",
        known.unwrap_or_default(),
        holders.join(", ")
    )))
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let limited = http_body_util::Limited::new(body, limit);
    limited
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| ApiError::BadRequest(format!("request body: {e}")))
}

fn url_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (dec(k), dec(v))
        })
        .collect()
}

/// `GET /1.0/instances` across the cluster.
async fn list(state: &AppState, me: &str, req: Request, next: Next) -> Result<Response, ApiError> {
    let cluster = &state.cluster;
    let path_and_query = req
        .uri()
        .path_and_query()
        .map_or_else(|| "/1.0/instances".to_string(), |p| p.as_str().to_string());
    let query: HashMap<String, String> = req
        .uri()
        .query()
        .map(url_pairs)
        .unwrap_or_default()
        .into_iter()
        .collect();
    let recursion = crate::api::recursion(&query)?;
    let filter = crate::api::filter(&query)?;
    cluster.refresh().await?;
    let members = cluster.cached_members();
    let client = peer_client(cluster)?;
    let others: Vec<Target> = members
        .iter()
        .filter(|m| m.online && m.name != me)
        .map(|m| Target {
            name: m.name.clone(),
            address: m.address.clone(),
            fingerprint: m.fingerprint.clone(),
        })
        .collect();
    let remote = join_all(others.iter().map(|t| {
        let client = client.clone();
        let path = path_and_query.clone();
        async move {
            (
                t.name.clone(),
                client.get_json(t, &path, LIST_TIMEOUT).await,
            )
        }
    }));
    let (local, remote) = tokio::join!(next.run(req), remote);
    if !local.status().is_success() {
        return Ok(local);
    }
    let local = read_body(local.into_body(), super::forward::MAX_ANSWER).await?;
    let local: Value = serde_json::from_slice(&local).unwrap_or(Value::Null);
    let mut items: Vec<Value> = local["metadata"].as_array().cloned().unwrap_or_default();
    let mut answered = vec![me.to_string()];
    for (member, result) in remote {
        match result {
            Ok(Value::Array(more)) => {
                items.extend(more);
                answered.push(member);
            }
            Ok(_) => answered.push(member),
            Err(e) => tracing::warn!(%member, error = %e, "member left out of the listing"),
        }
    }
    // The instances of members that did not answer: from the database, as Error.
    let locations = cluster
        .store()
        .instance_locations()
        .await
        .map_err(ClusterError::from)?;
    let mut missing = Vec::new();
    for row in locations {
        if answered.contains(&row.member) {
            continue;
        }
        missing.push(unreachable_instance(&row.name, &row.member));
    }
    let missing = crate::api::apply_filter(missing, filter.as_ref());
    for m in missing {
        if recursion == 0 {
            items.push(Value::String(format!(
                "/1.0/instances/{}",
                m["name"].as_str().unwrap_or_default()
            )));
        } else {
            items.push(m);
        }
    }
    Ok(crate::api::sync(items))
}

/// `GET /1.0/operations` across the cluster (for administrators: the other members'
/// lists include their token operations): each member's groups (`running`,
/// `success`…) merged; a member that does not answer within [`LIST_TIMEOUT`] is left out.
async fn list_operations(
    state: &AppState,
    me: &str,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let cluster = &state.cluster;
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| "/1.0/operations".to_string(), |p| p.as_str().to_string());
    let client = peer_client(cluster)?;
    let others: Vec<Target> = online_targets(cluster)
        .into_iter()
        .filter(|t| t.name != me)
        .collect();
    let remote = join_all(others.iter().map(|t| {
        let client = client.clone();
        let path = path.clone();
        async move { client.get_json(t, &path, LIST_TIMEOUT).await }
    }));
    let (local, remote) = tokio::join!(next.run(req), remote);
    if !local.status().is_success() {
        return Ok(local);
    }
    let local = read_body(local.into_body(), super::forward::MAX_ANSWER).await?;
    let local: Value = serde_json::from_slice(&local).unwrap_or(Value::Null);
    let mut groups = local["metadata"].as_object().cloned().unwrap_or_default();
    for answer in remote.into_iter().flatten() {
        let Some(map) = answer.as_object() else {
            continue;
        };
        for (status, ops) in map {
            let Some(more) = ops.as_array() else {
                continue;
            };
            if let Value::Array(list) = groups
                .entry(status.clone())
                .or_insert_with(|| Value::Array(Vec::new()))
            {
                list.extend(more.iter().cloned());
            }
        }
    }
    Ok(crate::api::sync(groups))
}

/// An instance of a member that cannot be asked: what the database knows, status Error.
fn unreachable_instance(name: &str, member: &str) -> Value {
    let instance = ctl_api::Instance {
        name: name.to_string(),
        description: String::new(),
        status: "Error".into(),
        status_code: ctl_api::StatusCode::Error,
        created_at: String::new(),
        last_used_at: String::new(),
        location: member.to_string(),
        kind: "container".into(),
        architecture: String::new(),
        ephemeral: false,
        stateful: false,
        profiles: Vec::new(),
        config: Default::default(),
        devices: Default::default(),
        expanded_config: Default::default(),
        expanded_devices: Default::default(),
        project: "default".into(),
    };
    let mut v = serde_json::to_value(instance).unwrap_or(Value::Null);
    v["state"] = Value::Null;
    v
}
