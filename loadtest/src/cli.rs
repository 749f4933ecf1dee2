//! The command line of `sealcast-loadtest`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use sealcast_relay::config::parse_duration;

use crate::error::LoadtestError;

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "sealcast-loadtest",
    version,
    about = "Load test for the sealcast relay: simulated clinics over real TLS, latency after decryption, resource use",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// A helper process the harness starts itself.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of a load test.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the null relay until killed; the harness starts it this way with
    /// --relay-process child.
    #[command(hide = true)]
    NullRelay {
        /// Address to listen on; port 0 picks a free port.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
    /// Run the followers of one step that a coordinating harness assigns on
    /// standard input; the harness starts it this way with --processes.
    #[command(hide = true)]
    Worker,
}

/// Measurement mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// A fixed load for the warm-up and duration.
    Run,
    /// Raise the number of clinics step by step until p99 exceeds the budget or frames are lost.
    Ramp,
    /// Open idle follower connections up to --count and report memory per connection.
    Connections,
}

/// Placement of a relay the harness starts itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Placement {
    /// In this process, on its own runtime threads. Memory figures then include the load generator.
    InProcess,
    /// As a child process, so CPU and memory are the relay's alone.
    Child,
}

/// A reference system run in the same invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Baseline {
    /// The null relay: same WebSocket stack and framing, no TLS, auth, crypto or store.
    Null,
    /// A Node.js relay on the `ws` package, with TLS and in-memory sessions (`loadtest/peers/`).
    NodeWs,
}

/// Options of a load test.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Measurement mode.
    #[arg(long, value_enum, default_value_t = Mode::Run)]
    pub mode: Mode,

    /// Base URL of a running relay, for example https://127.0.0.1:8443. Without it
    /// the harness starts a relay with a temporary data directory. Repeat it,
    /// or separate URLs with commas, for the nodes of one cluster: publishers
    /// and session requests go to the first URL, which must be the nodes'
    /// public URL, and followers go to the others in turn.
    #[arg(
        long,
        env = "SEALCAST_RELAY",
        value_name = "URL",
        value_delimiter = ','
    )]
    pub relay: Vec<String>,
    /// Key store folder of `sealcast` holding a clinician device signed in to
    /// the running relay given by --relay [default: the sealcast CLI's own].
    #[arg(long, env = "SEALCAST_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Data directory of the running relay, on this machine and without a
    /// mail server: the harness then creates a clinician there and signs it
    /// in through the relay's outbox folder, in place of --state-dir.
    #[arg(long, value_name = "DIR", conflicts_with = "state_dir")]
    pub relay_data_dir: Option<PathBuf>,
    /// PEM file with the CA certificate that signed the running relay's
    /// certificate [default with --relay-data-dir: its dev-cert.pem].
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
    /// Process id of the running relay, to read its CPU time and memory from
    /// /proc. Repeat it for the nodes of a cluster to report their sum.
    #[arg(long, value_name = "PID", value_delimiter = ',')]
    pub relay_pid: Vec<u32>,
    /// Placement of a relay the harness starts.
    #[arg(long, value_enum, default_value_t = Placement::InProcess)]
    pub relay_process: Placement,
    /// The sealcast-relay binary for --relay-process child [default: next to this executable].
    #[arg(long)]
    pub relay_bin: Option<PathBuf>,
    /// Folder of the Node.js baseline, with its packages installed by `npm ci`.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/peers"))]
    pub peers_dir: PathBuf,
    /// Reference systems to run interleaved with the relay under the same load.
    #[arg(long, value_enum)]
    pub baseline: Vec<Baseline>,
    /// Times each system runs, alternating between systems so that machine drift cancels.
    #[arg(long, default_value_t = 1)]
    pub rounds: u32,

    /// Number of clinics, each one publisher and --followers followers.
    #[arg(long, default_value_t = 50)]
    pub clinics: usize,
    /// Followers per clinic.
    #[arg(long, default_value_t = 2)]
    pub followers: usize,
    /// Frames per second each publisher sends.
    #[arg(long, default_value_t = 3.0)]
    pub rate: f64,
    /// Random spread of the gaps between frames, as a fraction of the mean gap (0 to 1).
    #[arg(long, default_value_t = 0.2)]
    pub jitter: f64,
    /// Time sending before measuring starts, for example 2s or 500ms.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Time measured after the warm-up.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Maximum wait after the last frame for acknowledgements and deliveries.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub drain: Duration,
    /// Folder that contains primock57/ with TextGrid transcripts; without it
    /// the relay's demo consultation is sent.
    #[arg(long, env = "SEALCAST_TRANSCRIPTS")]
    pub transcripts: Option<PathBuf>,
    /// Loopback source addresses to spread connections over: 127.0.0.2 and up.
    /// 0 lets the system choose.
    #[arg(long, default_value_t = 4)]
    pub source_addrs: u8,
    /// Connections opened at the same time while setting up, in each process.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,
    /// Processes that open the follower connections, this one included. Above
    /// 1, the harness starts N-1 worker processes of its own binary and
    /// spreads each step's followers so that every process has about the
    /// same number of sockets. Publishers stay in this process. Run and ramp
    /// modes only.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub processes: usize,

    /// Ramp mode: the p99 latency budget in milliseconds.
    #[arg(long, default_value_t = 10.0)]
    pub budget_ms: f64,
    /// Ramp mode: factor by which each step multiplies the clinics.
    #[arg(long, default_value_t = 1.5)]
    pub ramp_factor: f64,
    /// Ramp mode: times a failing step is run again before the ramp stops for that system.
    #[arg(long, default_value_t = 1)]
    pub ramp_retries: u32,
    /// Ramp mode: maximum number of steps.
    #[arg(long, default_value_t = 10)]
    pub ramp_steps: u32,

    /// Connection mode: idle follower connections to open.
    // NOTE: connection mode rejects --processes above 1 and runs in this one
    // process, so the file descriptor limit of one process caps --count.
    #[arg(long, default_value_t = 1000)]
    pub count: usize,
    /// Connection mode: followers per session.
    #[arg(long, default_value_t = 100)]
    pub followers_per_session: usize,

    /// Folder for result.json, report.md and latency.svg.
    #[arg(long, default_value = "loadtest-results")]
    pub out: PathBuf,
    /// Exit with status 1 when any frame is lost, duplicated, missing from a
    /// stream or fails to decrypt. Pass `--fail-on-loss false` to report only.
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    pub fail_on_loss: bool,
    /// Hide the progress display.
    #[arg(long)]
    pub no_progress: bool,
}

impl RunArgs {
    /// Checks ranges and combinations that clap cannot express.
    pub fn validate(&self) -> Result<(), LoadtestError> {
        let invalid = |option, reason: &str| {
            Err(LoadtestError::InvalidOption {
                option,
                reason: reason.to_string(),
            })
        };
        if self.clinics == 0 {
            return invalid("--clinics", "must be at least 1");
        }
        if !(self.rate.is_finite() && self.rate > 0.0 && self.rate <= 1000.0) {
            return invalid(
                "--rate",
                "must be above 0 and at most 1000 frames per second",
            );
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return invalid("--jitter", "must be between 0 and 1");
        }
        if self.duration.is_zero() {
            return invalid("--duration", "must be longer than zero");
        }
        if self.rounds == 0 {
            return invalid("--rounds", "must be at least 1");
        }
        if self.processes == 0 {
            return invalid("--processes", "must be at least 1");
        }
        if self.mode == Mode::Connections && self.processes > 1 {
            return invalid(
                "--processes",
                "connections mode runs in one process: omit --processes or use --mode run or ramp",
            );
        }
        if self.relay.is_empty() && self.relay_data_dir.is_some() {
            return invalid(
                "--relay-data-dir",
                "applies to a running relay only: pass its URL with --relay",
            );
        }
        if self.relay.is_empty() && !self.relay_pid.is_empty() {
            return invalid(
                "--relay-pid",
                "applies to a running relay only: pass its URL with --relay",
            );
        }
        if self.connect_concurrency == 0 {
            return invalid("--connect-concurrency", "must be at least 1");
        }
        if self.source_addrs > 250 {
            return invalid(
                "--source-addrs",
                "must be at most 250 (127.0.0.2 to 127.0.0.251)",
            );
        }
        if self.mode == Mode::Ramp && !(self.ramp_factor > 1.0 && self.ramp_factor.is_finite()) {
            return invalid("--ramp-factor", "must be above 1");
        }
        if self.mode == Mode::Connections && (self.count == 0 || self.followers_per_session == 0) {
            return invalid("--count", "and --followers-per-session must be at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_validate() {
        let cli = Cli::try_parse_from(["sealcast-loadtest"]).unwrap();
        cli.run.validate().unwrap();
        assert!(cli.run.fail_on_loss);
        assert_eq!(cli.run.mode, Mode::Run);
    }

    #[test]
    fn processes_apply_to_run_and_ramp() {
        for mode in ["run", "ramp"] {
            let cli =
                Cli::try_parse_from(["sealcast-loadtest", "--mode", mode, "--processes", "3"])
                    .unwrap();
            cli.run.validate().unwrap();
            assert_eq!(cli.run.processes, 3);
        }
    }

    #[test]
    fn worker_command_takes_no_run_options() {
        let cli = Cli::try_parse_from(["sealcast-loadtest", "worker"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Worker)));
        assert!(Cli::try_parse_from(["sealcast-loadtest", "worker", "--clinics", "3"]).is_err());
    }

    #[test]
    fn relay_repeats_for_cluster_nodes() {
        let cli = Cli::try_parse_from([
            "sealcast-loadtest",
            "--relay",
            "https://localhost:8443",
            "--relay",
            "https://localhost:8444,https://localhost:8445",
            "--relay-pid",
            "10,11",
            "--relay-pid",
            "12",
        ])
        .unwrap();
        cli.run.validate().unwrap();
        assert_eq!(
            cli.run.relay,
            [
                "https://localhost:8443",
                "https://localhost:8444",
                "https://localhost:8445"
            ]
        );
        assert_eq!(cli.run.relay_pid, [10, 11, 12]);
    }

    #[test]
    fn fail_on_loss_can_be_turned_off() {
        let cli = Cli::try_parse_from(["sealcast-loadtest", "--fail-on-loss", "false"]).unwrap();
        assert!(!cli.run.fail_on_loss);
    }

    #[test]
    fn out_of_range_values_are_rejected() {
        for args in [
            vec!["sealcast-loadtest", "--rate", "0"],
            vec!["sealcast-loadtest", "--jitter", "1.5"],
            vec!["sealcast-loadtest", "--clinics", "0"],
            vec!["sealcast-loadtest", "--mode", "ramp", "--ramp-factor", "1"],
            vec!["sealcast-loadtest", "--processes", "0"],
            vec!["sealcast-loadtest", "--relay-pid", "10"],
            vec!["sealcast-loadtest", "--relay-data-dir", "/tmp"],
            vec![
                "sealcast-loadtest",
                "--mode",
                "connections",
                "--processes",
                "2",
            ],
        ] {
            let cli = Cli::try_parse_from(&args).unwrap();
            assert!(cli.run.validate().is_err(), "{args:?} was accepted");
        }
    }
}
