//! Every metric that the Grafana dashboard in `deploy/grafana/` queries is
//! exported by a relay that has served a real session. A signed-in
//! clinician publishes, a patient follows and the session ends. Bad input
//! (a forged token, a malformed frame, a plaintext connection on the TLS
//! port) makes the error counters appear.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use sealcast_tests::metrics::scrape;
use sealcast_tests::process::RelayProcess;
use sealcast_tests::raw_socket::RawPublisher;
use sealcast_tests::raw_tls::exchange_plain;
use sealcast_tests::sample::sample_with_interim;
use sealcast_tests::session::{follow_until_end, wait_until_connected, LiveSession};
use sealcast_tests::staff::StaffDevice;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(30);

/// PromQL words that are not metric names: aggregations, their modifiers,
/// and binary and set operators.
const PROMQL_KEYWORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_queries_exported_metrics() {
    let dashboard = load_dashboard();
    check_dashboard_shape(&dashboard);
    let queried = queried_metrics(&dashboard);
    assert!(!queried.is_empty(), "the dashboard queries no metric");

    let data = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(data.path(), "127.0.0.1:0", &[]);
    run_session_with_bad_input(&relay).await;

    let url = url::Url::parse(&relay.base_url()).unwrap();
    let tls = sealcast_client::TlsSettings::from_ca_file(&relay.ca_cert()).unwrap();
    let exported: BTreeSet<String> = scrape(&url, &tls)
        .await
        .samples
        .into_iter()
        .map(|sample| sample.name)
        .collect();

    let missing: Vec<&String> = queried.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics the relay does not export: {missing:?}"
    );
}

/// Publishes and follows a session to its end, and sends a forged access
/// token, a malformed frame and a plaintext request on the TLS port.
async fn run_session_with_bad_input(relay: &RelayProcess) {
    let staff = StaffDevice::clinician(relay).await;
    let session = LiveSession::create(relay, &staff).await;
    let mut follower = session.follower();
    wait_until_connected(&mut follower, LIMIT).await;

    let mut publisher = session.publisher().await;
    for segment in &sample_with_interim() {
        publisher.publish(segment).await.unwrap();
    }
    publisher.end().await.unwrap();

    let mut raw = RawPublisher::connect(&session).await;
    raw.send(vec![0xff; 40]).await;

    let me = session.relay.join("v1/me").unwrap();
    let forged = reqwest::Client::builder()
        .use_preconfigured_tls(session.tls.http_config().unwrap())
        .build()
        .unwrap()
        .get(me)
        .header("authorization", "DPoP not-a-token")
        .header("dpop", "not-a-proof")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 401, "a forged token was accepted");

    let addr = relay.addr;
    tokio::task::spawn_blocking(move || exchange_plain(addr, b"GET / HTTP/1.1\r\n\r\n"))
        .await
        .unwrap();

    session.end().await;
    let outcome = follow_until_end(follower, LIMIT).await;
    assert!(outcome.ended, "the follower did not see the session end");
}

fn load_dashboard() -> Value {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/sealcast-relay.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// Checks the fields Grafana 10 and 11 need to import the dashboard with a
/// Prometheus data source picked at import time.
fn check_dashboard_shape(dashboard: &Value) {
    assert!(dashboard["title"].is_string(), "dashboard has no title");
    assert!(dashboard["uid"].is_string(), "dashboard has no uid");
    assert!(
        dashboard["schemaVersion"]
            .as_u64()
            .is_some_and(|version| version >= 36),
        "schemaVersion is older than Grafana 10's"
    );
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let datasource = variables
        .iter()
        .find(|variable| variable["type"] == "datasource")
        .expect("no data source variable");
    assert_eq!(datasource["query"], "prometheus");
    let reference = format!("${{{}}}", datasource["name"].as_str().unwrap());

    for panel in panels(dashboard) {
        let title = panel["title"].as_str().unwrap_or("untitled");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {title} has no query");
        for target in targets {
            assert_eq!(
                target["datasource"]["uid"], reference,
                "panel {title} does not use the data source variable"
            );
            assert!(
                target["expr"].is_string(),
                "panel {title} has a query without expr"
            );
        }
    }
}

/// Returns every panel that is not a row, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut found = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let nested = panel["panels"].as_array().into_iter().flatten();
        if panel["type"] == "row" {
            found.extend(nested);
        } else {
            found.push(panel);
        }
    }
    found
}

/// Returns every metric name in the panels' queries and the variables' queries.
fn queried_metrics(dashboard: &Value) -> BTreeSet<String> {
    let mut expressions: Vec<&str> = panels(dashboard)
        .iter()
        .flat_map(|panel| panel["targets"].as_array().unwrap())
        .map(|target| target["expr"].as_str().unwrap())
        .collect();
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        // Grafana's `label_values(METRIC, LABEL)` is not PromQL: keep METRIC.
        if let Some(query) = variable["query"]["query"].as_str() {
            let inner = query.strip_prefix("label_values(").unwrap_or(query);
            expressions.push(inner.split(',').next().unwrap_or(inner));
        }
    }
    let mut names = BTreeSet::new();
    for expression in expressions {
        for name in metric_names(expression) {
            assert!(
                name.starts_with("sealcast_"),
                "query {expression:?} names {name}, which lacks the sealcast_ prefix"
            );
            names.insert(name);
        }
    }
    names
}

/// Extracts the metric names of a PromQL expression: the identifiers that
/// are not functions, keywords, label names, strings, ranges or Grafana
/// variables.
fn metric_names(expression: &str) -> Vec<String> {
    let text = strip_enclosed(expression, '"', '"');
    let text = strip_enclosed(&text, '{', '}');
    let text = strip_enclosed(&text, '[', ']');
    let chars: Vec<char> = text.chars().collect();
    let mut names = Vec::new();
    let mut index = 0;
    while index < chars.len() {
        let start = index;
        if chars[index] == '$' {
            index += 1;
            while index < chars.len() && is_word_char(chars[index]) {
                index += 1;
            }
            continue;
        }
        if !(chars[index].is_ascii_alphabetic() || chars[index] == '_') {
            index += 1;
            continue;
        }
        while index < chars.len() && is_word_char(chars[index]) {
            index += 1;
        }
        let word: String = chars[start..index].iter().collect();
        let next = chars[index..].iter().find(|c| !c.is_whitespace());
        let is_function = next == Some(&'(');
        let is_grouping = ["by", "without", "on", "ignoring"].contains(&word.as_str());
        if is_grouping {
            // The list after `by`, `without`, `on` and `ignoring` names labels.
            index = skip_label_list(&chars, index);
        } else if !is_function && !PROMQL_KEYWORDS.contains(&word.as_str()) {
            names.push(word);
        }
    }
    names
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Returns the position after the parenthesised list that starts at or
/// after `index`, or `index` when none follows.
fn skip_label_list(chars: &[char], index: usize) -> usize {
    let Some(open) = chars[index..].iter().position(|c| !c.is_whitespace()) else {
        return index;
    };
    if chars[index + open] != '(' {
        return index;
    }
    chars[index + open..]
        .iter()
        .position(|&c| c == ')')
        .map_or(chars.len(), |close| index + open + close + 1)
}

/// Removes every `open ... close` span, delimiters included.
fn strip_enclosed(text: &str, open: char, close: char) -> String {
    let mut out = String::new();
    let mut inside = false;
    for c in text.chars() {
        if inside {
            if c == close {
                inside = false;
            }
        } else if c == open {
            inside = true;
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn metric_names_skips_functions_and_labels() {
    let expression = "histogram_quantile(0.99, sum by (le, mode) \
        (rate(sealcast_store_checkpoint_seconds_bucket{instance=~\"$instance\"}[$__rate_interval]))) \
        / on (mode) sealcast_other_total * 60";
    assert_eq!(
        metric_names(expression),
        [
            "sealcast_store_checkpoint_seconds_bucket",
            "sealcast_other_total"
        ]
    );
}
