//! The `sealcast` command-line tool. See `sealcast --help`.

use std::process::ExitCode;

fn main() -> ExitCode {
    match sealcast_client::cli::main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("sealcast: error: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}
