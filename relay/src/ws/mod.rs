//! The WebSocket endpoints: publish and follow.
//!
//! Credentials are checked before the upgrade, so a bad one gets an HTTP 401
//! with a JSON body. After the upgrade every problem closes the socket with a
//! code from [`sealcast_protocol::api::close`] and a short reason.
//!
//! | module | job |
//! | --- | --- |
//! | [`publish`] | receive frames, order them, acknowledge commits |
//! | [`follow`] | deliver history then live frames, commits and the session end |
//! | [`follow_audit`] | audit events of followers joining and leaving |
//! | [`socket`] | writes with a timeout, keepalive, closing |

pub(crate) mod follow;
mod follow_audit;
pub(crate) mod publish;
mod socket;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;

use crate::config::Limits;
use crate::http::ApiError;

/// Applies the configured message, frame and buffer limits to an upgrade.
fn configure(upgrade: WebSocketUpgrade, limits: &Limits) -> WebSocketUpgrade<fn(axum::Error)> {
    upgrade
        .max_message_size(limits.max_message_size)
        .max_frame_size(limits.max_message_size)
        .read_buffer_size(limits.read_buffer_size)
        .write_buffer_size(limits.write_buffer_size)
        .max_write_buffer_size(limits.max_write_buffer_size)
        .on_failed_upgrade(log_failed_upgrade as fn(axum::Error))
}

fn log_failed_upgrade(error: axum::Error) {
    tracing::debug!(%error, "WebSocket upgrade failed");
}

/// Turns a request that is not a WebSocket upgrade into a 400 response.
fn not_an_upgrade(rejection: WebSocketUpgradeRejection) -> ApiError {
    ApiError::BadRequest(format!(
        "this endpoint needs a WebSocket upgrade request: {rejection}"
    ))
}
