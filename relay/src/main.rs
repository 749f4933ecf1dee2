//! The `sealcast-relay` binary; see [`sealcast_relay::cli`].

fn main() -> std::process::ExitCode {
    sealcast_relay::cli::main()
}
