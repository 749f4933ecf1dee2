//! The `sealcast` command-line tool. See `sealcast --help`.

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    match sealcast_client::cli::main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // A closed stderr must not turn the error into a panic.
            let _ = writeln!(std::io::stderr(), "sealcast: error: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}
