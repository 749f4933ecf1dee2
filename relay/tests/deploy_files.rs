//! The files under `deploy/`: the systemd unit passes `systemd-analyze
//! verify`, and the container's configuration passes `config check`.

// Helpers fail by panicking, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

const UNIT_NAME: &str = "sealcast-relay.service";

/// Where the unit expects the binary; the test points it at the built one,
/// because `systemd-analyze verify` checks that the command exists.
const INSTALLED_BINARY: &str = "/usr/local/bin/sealcast-relay";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

#[test]
fn systemd_unit_passes_verify() {
    let Some(analyze) = find_in_path("systemd-analyze") else {
        println!("skipped: systemd-analyze is not installed (Debian package systemd)");
        return;
    };
    let unit = std::fs::read_to_string(deploy_dir().join("systemd").join(UNIT_NAME)).unwrap();
    assert!(
        unit.contains(INSTALLED_BINARY),
        "ExecStart no longer runs {INSTALLED_BINARY}"
    );
    let unit = unit.replace(INSTALLED_BINARY, env!("CARGO_BIN_EXE_sealcast-relay"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(UNIT_NAME);
    std::fs::write(&path, unit).unwrap();

    let output = Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{stderr}");
    // Unknown keys and bad values are warnings with a zero exit status.
    let warnings: Vec<&str> = stderr
        .lines()
        .chain(stdout.lines())
        .filter(|line| line.contains(UNIT_NAME))
        .collect();
    assert!(warnings.is_empty(), "{warnings:#?}");
}

#[test]
fn systemd_unit_has_hardening_settings() {
    let unit = std::fs::read_to_string(deploy_dir().join("systemd").join(UNIT_NAME)).unwrap();
    for line in [
        "DynamicUser=yes",
        "StateDirectory=sealcast-relay",
        "CapabilityBoundingSet=\n",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "SystemCallFilter=@system-service",
        "MemoryDenyWriteExecute=yes",
        "LoadCredential=at-rest-key:",
        "--at-rest-key-file %d/at-rest-key",
    ] {
        assert!(unit.contains(line), "unit lacks {line:?}");
    }
}

#[test]
fn container_config_passes_check() {
    let output = Command::new(env!("CARGO_BIN_EXE_sealcast-relay"))
        .args(["config", "check", "--config"])
        .arg(deploy_dir().join("container/sealcast-relay.toml"))
        .env_remove("SEALCAST_CONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("ops_listen = \"0.0.0.0:9090\""), "{stdout}");
}

#[test]
fn containerfile_copies_the_files_it_names() {
    let containerfile =
        std::fs::read_to_string(deploy_dir().join("container/Containerfile")).unwrap();
    let root = deploy_dir().join("..");
    for line in containerfile.lines() {
        let Some(rest) = line.strip_prefix("COPY deploy/") else {
            continue;
        };
        let source = rest.split_whitespace().next().unwrap();
        assert!(
            root.join("deploy").join(source).is_file(),
            "Containerfile copies missing deploy/{source}"
        );
    }
}
