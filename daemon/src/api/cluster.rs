//! `/1.0/cluster` and `/1.0/cluster/members`: forming a cluster and its members, in
//! Incus' shapes.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use ctl_api::{ClusterMemberStatePost, ClusterMembersPost, ClusterPut};

use super::{ApiError, AppState, accepted, parse_json, recursion, sync};
use crate::db::store::MemberState;

/// `GET /1.0/cluster`.
pub async fn get_cluster(State(state): State<AppState>) -> Response {
    sync(state.cluster.status())
}

/// `PUT /1.0/cluster`: enable clustering, or join a cluster with a token.
pub async fn put_cluster(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let req: ClusterPut = parse_json(&body)?;
    state.cluster.configure(req).await?;
    Ok(sync(serde_json::json!({})))
}

/// `GET /1.0/cluster/members`.
pub async fn list_members(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let members = state.cluster.members().await?;
    Ok(if recursion(&q)? == 0 {
        sync(
            members
                .iter()
                .map(|m| format!("/1.0/cluster/members/{}", m.server_name))
                .collect::<Vec<_>>(),
        )
    } else {
        sync(members)
    })
}

/// `POST /1.0/cluster/members`: a join token for a new member.
pub async fn add_member(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let req: ClusterMembersPost = parse_json(&body)?;
    let op = state.cluster.issue_token(&req.server_name).await?;
    Ok(accepted(&op))
}

/// `GET /1.0/cluster/members/NAME`.
pub async fn get_member(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    Ok(sync(state.cluster.member(&name).await?))
}

/// `DELETE /1.0/cluster/members/NAME[?force=1]`.
pub async fn delete_member(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let force = q.get("force").is_some_and(|v| v == "1" || v == "true");
    state.cluster.remove_member(&name, force).await?;
    Ok(sync(serde_json::json!({})))
}

/// `POST /1.0/cluster/members/NAME/state`: `evacuate` stops the member's running
/// instances and keeps new ones off it; `restore` starts them again.
pub async fn member_state(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: ClusterMemberStatePost = parse_json(&body)?;
    let action = match req.action.as_str() {
        "evacuate" => MemberState::Evacuated,
        "restore" => MemberState::Online,
        other => {
            return Err(ApiError::BadRequest(format!(
                "unknown action \"{other}\": use evacuate or restore"
            )));
        }
    };
    // Checked before the operation starts: an unknown member is a 404 now.
    state.cluster.member(&name).await?;
    let cluster = state.cluster.clone();
    let what = if action == MemberState::Evacuated {
        "Evacuating cluster member"
    } else {
        "Restoring cluster member"
    };
    Ok(super::spawn_task(
        &state,
        what,
        Default::default(),
        async move {
            cluster
                .evacuate_or_restore(&name, action)
                .await
                .map_err(|e| crate::instance::InstanceError::Internal(e.to_string()))
        },
    ))
}
