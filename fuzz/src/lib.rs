//! Fuzz targets for every parser that reads bytes from a peer or a file.
//!
//! Each public function takes one fuzzer input, feeds it to the real parser
//! and checks the properties that must hold for any input: no panic, and
//! where a value parses, encoding it again gives back what was read. The
//! binaries in `fuzz_targets/` wrap these functions for libFuzzer, and the
//! end-to-end test crate replays the seed corpus in `corpus/` through the
//! same functions on every test run.
//!
//! Frames are sealed and opened with [`fuzz_key`] for session
//! [`FUZZ_SESSION`], so that seeds made from real transcripts open and the
//! fuzzer starts from frames that pass authentication.

mod api;
mod frame;
mod input;

pub use api::{dpop_proof, events, invite_link, FUZZ_ACCESS_TOKEN, FUZZ_NOW, FUZZ_URL};
pub use frame::{delivery, frame_header, frame_open, fuzz_key, FUZZ_SESSION};
pub use input::{jsonl, textgrid};
