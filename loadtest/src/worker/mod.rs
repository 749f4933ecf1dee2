//! Worker processes: with `--processes N` above 1, each step's follower
//! sockets are spread over the coordinator and N-1 workers, so that a run
//! can hold more connections than one process has file descriptors.
//! Publishers, session set-up and session ends stay in the coordinator,
//! which has the signed-in clinician device.
//!
//! | module | job |
//! | --- | --- |
//! | [`message`] | the line-delimited JSON messages on the pipes |
//! | [`split`] | which process opens which followers |
//! | [`process`] | starting a worker and talking to it, coordinator side |
//! | [`serve`] | the worker side |

pub mod message;
pub mod process;
pub mod serve;
pub mod split;

use crate::error::LoadtestError;

/// Runs this process as a worker: reads its assignment on standard input
/// and writes its messages on standard output.
pub fn run() -> Result<(), LoadtestError> {
    let runtime = crate::runtime("loadgen-worker")?;
    let served = runtime.block_on(serve::serve(tokio::io::stdin(), tokio::io::stdout()));
    // Reading standard input blocks a thread that a normal shutdown would wait for.
    runtime.shutdown_background();
    served.map_err(|reason| LoadtestError::Worker {
        worker: format!("load-test worker (pid {})", std::process::id()),
        reason,
    })
}
