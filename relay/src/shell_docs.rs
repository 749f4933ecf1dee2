//! `sealcast-relay completions SHELL` and `sealcast-relay man`: a shell
//! completion script and a roff man page, generated from the command-line
//! definition so that they list every command and flag of this build.

use std::io::{self, Write};

use clap_complete::Shell;

/// Writes the completion script of `command` for `shell` to `out`.
pub(crate) fn write_completions(
    shell: Shell,
    command: &mut clap::Command,
    out: &mut impl Write,
) -> io::Result<()> {
    let name = command.get_name().to_owned();
    clap_complete::generate(shell, command, name, out);
    out.flush()
}

/// Writes the man page of `command` to `out`.
pub(crate) fn write_man(command: clap::Command, out: &mut impl Write) -> io::Result<()> {
    clap_mangen::Man::new(command).render(out)?;
    out.flush()
}
