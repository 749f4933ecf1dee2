//! `sealcast-loadtest`: the load-test harness for the sealcast relay.
//!
//! It simulates clinics, each one publisher and several followers, that
//! authenticate and seal exactly as real devices do. They run against a
//! running relay or one the harness starts itself. The harness measures
//! publisher-to-follower latency after decryption, throughput, losses and
//! the relay's CPU and memory. It
//! can run the null relay (the same WebSocket stack with nothing else) in
//! the same invocation as a reference. It is not a functional test suite:
//! its pass condition is only that no frame is lost, duplicated or corrupted.
//!
//! Entry point: [`driver::execute`] with the parsed [`cli::RunArgs`].
//!
//! | module | job |
//! | --- | --- |
//! | [`cli`] | command line |
//! | [`workload`] | transcripts, send schedule, the `sent_us` probe field |
//! | [`client`] | simulated devices: sockets, publisher, follower |
//! | [`driver`] | systems under test, modes, steps |
//! | [`target`] | starting and stopping the relay and the null relay |
//! | [`null_relay`] | the reference relay |
//! | [`stats`] | HDR histograms, counters, `/proc` readings |
//! | [`report`] | JSON result, table, Markdown report, SVG plot |
//! | [`progress`] | the live progress line |
//! | [`worker`] | follower sockets in worker processes (`--processes`) |

mod cli;
mod client;
mod driver;
mod error;
mod null_relay;
mod progress;
mod report;
mod stats;
mod target;
mod worker;
mod workload;

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::SystemTime;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command, RunArgs};
use crate::error::LoadtestError;
use crate::null_relay::NullRelay;
use crate::workload::Transcripts;

/// First words of the line the null relay prints when it listens; the address follows.
pub const NULL_RELAY_BANNER: &str = "null relay listening on ";

/// Exit status when the run failed its pass conditions.
const EXIT_FAILED_CHECKS: u8 = 1;
/// Exit status when the run could not be carried out.
const EXIT_ERROR: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let outcome = match cli.command {
        Some(Command::NullRelay { listen }) => serve_null_relay(listen).map(|()| ExitCode::SUCCESS),
        Some(Command::Worker) => worker::run().map(|()| ExitCode::SUCCESS),
        None => load_test(&cli.run),
    };
    outcome.unwrap_or_else(|err| {
        tracing::error!(error = %err, "load test failed");
        eprintln!("error: {err}");
        ExitCode::from(EXIT_ERROR)
    })
}

fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn runtime(thread_name: &str) -> Result<tokio::runtime::Runtime, LoadtestError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(thread_name)
        .build()
        .map_err(LoadtestError::Runtime)
}

/// Runs the load test, prints the table and writes the result files.
fn load_test(args: &RunArgs) -> Result<ExitCode, LoadtestError> {
    args.validate()?;
    let transcripts = Transcripts::load(args.transcripts.as_deref())?;
    let started = SystemTime::now();
    tracing::info!(
        mode = ?args.mode,
        transcripts = transcripts.source(),
        segments = transcripts.segment_count(),
        "load test starting"
    );

    let measurements = runtime("loadgen")?.block_on(driver::execute(args, &transcripts))?;
    let result = report::build(args, &transcripts, measurements, started);
    print!("{}", report::table::render(&result));
    for path in report::write_all(&result, &args.out)? {
        println!("wrote {}", path.display());
    }

    if result.verdict.passed || !args.fail_on_loss {
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(EXIT_FAILED_CHECKS))
    }
}

/// Serves the null relay until SIGINT or SIGTERM.
fn serve_null_relay(listen: SocketAddr) -> Result<(), LoadtestError> {
    runtime("null-relay")?.block_on(async {
        let relay = NullRelay::start(listen)
            .await
            .map_err(|err| LoadtestError::TargetStart {
                system: "null".into(),
                reason: format!("failed to listen on {listen}: {err}"),
            })?;
        let mut stdout = std::io::stdout();
        let announced = writeln!(stdout, "{NULL_RELAY_BANNER}{}", relay.local_addr())
            .and_then(|()| stdout.flush());
        if let Err(err) = announced {
            tracing::error!(error = %err, "failed to print the null relay's address");
        }
        wait_for_stop().await;
        relay.stop();
        Ok(())
    })
}

async fn wait_for_stop() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        }
        Err(err) => {
            tracing::error!(error = %err, "failed to listen for SIGTERM: waiting for SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
