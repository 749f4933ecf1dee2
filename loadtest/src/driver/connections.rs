//! Connection mode: idle follower connections up to a count, and the
//! system's resident memory per connection.
//!
//! Memory is read once the sessions exist, and again once every connection
//! is open and has been idle for a moment. The figure is the difference
//! divided by the open connections. Each connection is a real follower: TLS
//! when the system speaks it, the invite token, and the welcome with the key
//! fingerprint checked.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use sealcast_client::endpoint;
use tokio::sync::watch;

use super::setup::{create_clinics, relay_api};
use crate::cli::RunArgs;
use crate::client::connect_follower;
use crate::client::socket::{NodeDialers, Socket};
use crate::error::LoadtestError;
use crate::progress::Progress;
use crate::report::schema::ConnectionResult;
use crate::stats::summary::Summary;
use crate::stats::Recorder;
use crate::target::Target;

/// Idle time before memory is read, so that buffers settle.
const SETTLE: Duration = Duration::from_secs(2);

/// Opens the connections, measures and closes them again.
pub async fn run(target: &Target, args: &RunArgs) -> Result<ConnectionResult, LoadtestError> {
    let progress = Progress::new(&format!("{} connections", target.name()), !args.no_progress);
    let sessions = args.count.div_ceil(args.followers_per_session);
    progress.set_phase(&format!("creating {sessions} sessions"));
    let api = relay_api(target)?;
    let clinics = create_clinics(target, &api, sessions, args.connect_concurrency).await?;

    tokio::time::sleep(SETTLE).await;
    let before = target.probe.as_ref().and_then(|probe| probe.sample());

    let recorder = Arc::new(Recorder::new());
    let follower_nodes = NodeDialers::new(
        target
            .follower_endpoints()
            .into_iter()
            .map(|node| (node.base_url, node.addr))
            .collect(),
        target.websocket_tls()?,
        args.source_addrs,
    );
    let started = Instant::now();
    let attempts = (0..args.count).map(|number| {
        let clinic = &clinics[number / args.followers_per_session];
        let (node_url, dialer) = follower_nodes.node(number);
        let follow_url = endpoint::follow_url(node_url, None, 0);
        let recorder = Arc::clone(&recorder);
        let progress = &progress;
        async move {
            let socket = connect_follower(
                dialer,
                &follow_url,
                &clinic.invite_token,
                &clinic.key,
                &recorder,
                number,
            )
            .await;
            if number % 500 == 0 {
                progress.set_phase(&format!("connecting: {} open", recorder.connections_open()));
            }
            socket
        }
    });
    let sockets: Vec<Socket> = stream::iter(attempts)
        .buffer_unordered(args.connect_concurrency)
        .filter_map(|socket| async move { socket })
        .collect()
        .await;
    let setup_s = started.elapsed().as_secs_f64();

    progress.set_phase(&format!("{} open, idle", sockets.len()));
    let (stop, holders) = hold(sockets, Arc::clone(&recorder));
    tokio::time::sleep(SETTLE).await;
    let after = target.probe.as_ref().and_then(|probe| probe.sample());
    let opened = recorder.connections_open();

    let _ = stop.send(true);
    for holder in holders {
        let _ = holder.await;
    }
    progress.finish();

    let rss_before_kib = before.map_or(0, |sample| sample.rss_kib);
    let rss_after_kib = after.map_or(0, |sample| sample.rss_kib);
    let growth_bytes = rss_after_kib.saturating_sub(rss_before_kib) as f64 * 1024.0;
    Ok(ConnectionResult {
        system: target.name().to_string(),
        requested: args.count,
        opened,
        sessions,
        rss_before_kib,
        rss_after_kib,
        rss_per_connection_bytes: if opened == 0 {
            0.0
        } else {
            growth_bytes / opened as f64
        },
        memory_includes_load_generator: target.probe.as_ref().is_some_and(|p| p.memory_is_shared()),
        connect: Summary::of(&recorder.histograms().connect),
        setup_s,
        errors: recorder.errors(),
    })
}

/// Keeps every socket open and reading, which replies to the relay's pings,
/// until `true` is sent on the returned channel.
fn hold(
    sockets: Vec<Socket>,
    recorder: Arc<Recorder>,
) -> (watch::Sender<bool>, Vec<tokio::task::JoinHandle<()>>) {
    let (stop, stopped) = watch::channel(false);
    let holders = sockets
        .into_iter()
        .map(|mut socket| {
            let mut stopped = stopped.clone();
            let recorder = Arc::clone(&recorder);
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stopped.wait_for(|stop| *stop) => break,
                        message = socket.next() => {
                            if !matches!(message, Some(Ok(_))) {
                                recorder.count_error("idle follower closed");
                                recorder.record_disconnect();
                                return;
                            }
                        }
                    }
                }
                let _ = tokio::time::timeout(Duration::from_secs(1), socket.close(None)).await;
            })
        })
        .collect();
    (stop, holders)
}
