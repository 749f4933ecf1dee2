//! The configuration file through the `sealcast-relay` binary: the committed
//! example, `config check` on valid and broken files, and a relay started
//! from the example answering `/readyz` on its ops listener.

// Helpers fail by panicking, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The example file committed under `deploy/`.
fn committed_example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/sealcast-relay.toml")
}

/// A `sealcast-relay` command without any `SEALCAST_` variable of the test
/// environment, so that only the arguments and the file count.
fn relay_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sealcast-relay"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("SEALCAST_") {
            command.env_remove(name);
        }
    }
    command
}

fn config_check(file: &Path) -> Output {
    relay_command()
        .args(["config", "check", "--config"])
        .arg(file)
        .output()
        .unwrap()
}

#[test]
fn committed_example_matches_printed_one() {
    let printed = relay_command()
        .args(["config", "example"])
        .output()
        .unwrap();
    assert!(printed.status.success());
    let printed = String::from_utf8(printed.stdout).unwrap();
    let committed = std::fs::read_to_string(committed_example()).unwrap();
    assert_eq!(
        committed, printed,
        "deploy/sealcast-relay.toml differs: run `sealcast-relay config example > deploy/sealcast-relay.toml`"
    );
}

#[test]
fn example_passes_config_check() {
    let output = config_check(&committed_example());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");

    let printed = String::from_utf8(output.stdout).unwrap();
    let settings: toml::Table = printed.parse().unwrap();
    assert_eq!(settings["listen"].as_str(), Some("127.0.0.1:8443"));
    assert_eq!(
        settings["limits"]["write_timeout"].as_str(),
        Some("30s"),
        "{printed}"
    );
}

#[test]
fn config_check_redacts_inline_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("relay.toml");
    let key = "ab".repeat(32);
    let text = format!(
        "at_rest_key = \"{key}\"\n[mail]\nsmtp_url = \"smtps://relay:hunter2@mail.example:465\"\n"
    );
    std::fs::write(&file, text).unwrap();

    let output = config_check(&file);
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("at_rest_key = \"<redacted>\""), "{stdout}");
    assert!(stdout.contains("smtp_url = \"<redacted>\""), "{stdout}");
    assert!(!stdout.contains(&key), "{stdout}");
    assert!(!stdout.contains("hunter2"), "{stdout}");
}

#[test]
fn config_check_names_each_broken_key() {
    let dir = tempfile::tempdir().unwrap();
    let missing_key_file = dir.path().join("no-such.key");
    // (file contents, text the error must contain)
    let cases = [
        ("lsten = \"127.0.0.1:8443\"\n", "lsten"),
        ("[limits]\nmax_conections = 10\n", "limits.max_conections"),
        ("listen = \"nope\"\n", "listen = \"nope\""),
        ("listen = \"nope\"\n", "set listen to IP:PORT"),
        ("ops_listen = \"localhost\"\n", "ops_listen = \"localhost\""),
        (
            "[limits]\nwrite_timeout = \"fast\"\n",
            "limits.write_timeout = \"fast\"",
        ),
        (
            "[retention]\ncontent = \"7x\"\n",
            "retention.content = \"7x\"",
        ),
        ("[retention]\ncontent = 7\n", "retention.content = 7"),
        ("[retention]\ncontent = 7\n", "a number without a unit"),
        (
            "[limits]\nidle_timeout = \"60\"\n",
            "limits.idle_timeout = \"60\"",
        ),
        ("log_format = \"xml\"\n", "log_format = \"xml\""),
        ("log_format = \"xml\"\n", "text, json"),
        (
            "[limits]\nmax_connections = \"many\"\n",
            "limits.max_connections",
        ),
        (
            "[limits]\nmax_connections = 0\n",
            "limits.max_connections = 0",
        ),
        (
            "[limits]\nping_interval = \"90s\"\n",
            "limits.idle_timeout = \"1m\" from the defaults",
        ),
        ("[tls]\ncert = \"cert.pem\"\n", "tls.key is not set"),
        ("public_url = \"relay.example\"\n", "public_url"),
        ("[mail]\nfrom = \"not a mailbox\"\n", "mail.from"),
        ("fanout = \"redis\"\n", "fanout = \"redis\""),
        ("fanout = \"nats\"\n", "nats_url is not set"),
        ("nats_url = \"nats://127.0.0.1:4222\"\n", "fanout is local"),
        (
            "fanout = \"nats\"\nnats_url = \"http://user:hunter2@127.0.0.1:4222\"\n",
            "not nats or tls",
        ),
        ("store = \"mysql\"\n", "store = \"mysql\""),
        ("store = \"postgres\"\n", "database_url is not set"),
        (
            "database_url = \"postgres://127.0.0.1/sealcast\"\n",
            "store is sqlite",
        ),
        (
            "store = \"postgres\"\ndatabase_url = \"postgres://u:hunter2@127.0.0.1:99999/x\"\n",
            "is not a PostgreSQL connection string",
        ),
    ];
    let mut cases: Vec<(String, String)> = cases
        .iter()
        .map(|(text, expected)| (text.to_string(), expected.to_string()))
        .collect();
    cases.push((
        format!("at_rest_key_file = \"{}\"\n", missing_key_file.display()),
        format!("at_rest_key_file = \"{}\"", missing_key_file.display()),
    ));

    for (index, (text, expected)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("broken-{index}.toml"));
        std::fs::write(&file, text).unwrap();
        let output = config_check(&file);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{text:?} was accepted");
        assert!(
            stderr.contains(expected.as_str()),
            "error for {text:?} does not contain {expected:?}: {stderr}"
        );
        assert!(output.stdout.is_empty(), "{text:?} printed settings");
        assert!(
            !stderr.contains("hunter2"),
            "a password was printed: {stderr}"
        );
    }
}

#[test]
fn config_check_names_the_environment_variable() {
    let output = relay_command()
        .args(["config", "check", "--config"])
        .arg(committed_example())
        .env("SEALCAST_LIMITS__PING_INTERVAL", "soon")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("from environment variable SEALCAST_LIMITS__PING_INTERVAL"),
        "{stderr}"
    );
}

#[test]
fn flags_override_environment_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("relay.toml");
    std::fs::write(
        &file,
        "[limits]\nmax_connections = 100\nread_buffer_size = 4096\nwrite_buffer_size = 4096\n",
    )
    .unwrap();

    let output = relay_command()
        .args(["config", "check", "--max-connections", "300", "--config"])
        .arg(&file)
        .env("SEALCAST_LIMITS__MAX_CONNECTIONS", "200")
        .env("SEALCAST_LIMITS__READ_BUFFER_SIZE", "2048")
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let settings: toml::Table = stdout.parse().unwrap();
    let limits = &settings["limits"];
    assert_eq!(limits["max_connections"].as_integer(), Some(300));
    assert_eq!(limits["read_buffer_size"].as_integer(), Some(2048));
    assert_eq!(limits["write_buffer_size"].as_integer(), Some(4096));
}

#[test]
fn missing_config_file_is_an_error() {
    let output = config_check(Path::new("/nonexistent/sealcast-relay.toml"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("/nonexistent/sealcast-relay.toml"),
        "{stderr}"
    );
}

#[test]
fn relay_from_example_answers_readyz_on_ops_listener() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let example = std::fs::read_to_string(committed_example()).unwrap();
    let config = example
        .replace("listen = \"127.0.0.1:8443\"", "listen = \"127.0.0.1:0\"")
        .replace(
            "# ops_listen = \"127.0.0.1:9090\"",
            "ops_listen = \"127.0.0.1:0\"",
        )
        .replace(
            "data_dir = \"./sealcast-data\"",
            &format!("data_dir = \"{}\"", data_dir.display()),
        );
    assert_ne!(config, example);
    let file = dir.path().join("relay.toml");
    std::fs::write(&file, config).unwrap();

    let mut child = relay_command()
        .args(["serve", "--config"])
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let public = read_address(&mut stdout, "sealcast-relay listening on https://");
    let ops = read_address(&mut stdout, "/healthz, /readyz and /metrics on http://");
    assert!(data_dir.join("relay.db").exists());

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let http = reqwest::Client::new();
        let ready = http
            .get(format!("http://{ops}/readyz"))
            .send()
            .await
            .unwrap();
        assert_eq!(ready.status().as_u16(), 200);
        assert_eq!(ready.text().await.unwrap(), "ready");

        let metrics = http
            .get(format!("http://{ops}/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(metrics.status().as_u16(), 200);
        let text = metrics.text().await.unwrap();
        assert!(text.contains("route=\"/readyz\""), "{text}");

        // With an ops listener, the public listener leaves these routes out.
        let tls = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .unwrap();
        let public_metrics = tls
            .get(format!("https://{public}/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(public_metrics.status().as_u16(), 404);
    });

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "relay did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(exit.success(), "{stderr}");
}

/// Reads stdout lines until one starts with `prefix` and returns the rest.
fn read_address(stdout: &mut impl BufRead, prefix: &str) -> String {
    for _ in 0..10 {
        let mut line = String::new();
        assert_ne!(
            stdout.read_line(&mut line).unwrap(),
            0,
            "relay exited before {prefix:?}"
        );
        if let Some(address) = line.trim_end().strip_prefix(prefix) {
            return address.to_owned();
        }
    }
    panic!("no line starting with {prefix:?}");
}
