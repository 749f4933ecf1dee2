//! Scraping the relay's `GET /metrics` and reading samples from the
//! Prometheus text exposition format.

use std::collections::BTreeMap;

use sealcast_client::TlsSettings;
use url::Url;

/// One sample line: a metric name, its labels and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name, for example `sealcast_frames_rejected_total`.
    pub name: String,
    /// Label names and values.
    pub labels: BTreeMap<String, String>,
    /// The sample's value.
    pub value: f64,
}

/// The samples of one scrape.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// Every sample, in the order the relay listed them.
    pub samples: Vec<Sample>,
}

impl Scrape {
    /// Returns the value of the sample with exactly these labels, or 0 when
    /// there is none, which is what a counter that never moved reads as.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let expected: BTreeMap<String, String> = labels
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|sample| sample.name == name && sample.labels == expected)
            .map_or(0.0, |sample| sample.value)
    }
}

/// Fetches `GET /metrics` from the relay at `relay`, trusting `tls`.
pub async fn scrape(relay: &Url, tls: &TlsSettings) -> Scrape {
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls.http_config().expect("TLS settings build"))
        .build()
        .expect("HTTP client builds");
    let url = relay.join("metrics").expect("metrics URL");
    let response = client
        .get(url)
        .send()
        .await
        .expect("GET /metrics is answered");
    assert_eq!(response.status().as_u16(), 200, "GET /metrics failed");
    let text = response.text().await.expect("metrics body is text");
    parse(&text)
}

/// Parses the Prometheus text format. Comment lines are skipped.
pub fn parse(text: &str) -> Scrape {
    let samples = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| parse_sample(line).unwrap_or_else(|| panic!("invalid metrics line {line:?}")))
        .collect();
    Scrape { samples }
}

fn parse_sample(line: &str) -> Option<Sample> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = value.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
        None => (series, BTreeMap::new()),
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Parses `a="1",b="x\"y"` into a map, undoing the format's escapes.
fn parse_labels(text: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after_key) = rest.split_once("=\"")?;
        let (value, after_value) = unescape_until_quote(after_key)?;
        labels.insert(key.trim_start_matches(',').to_string(), value);
        rest = after_value.trim_start_matches(',');
    }
    Some(labels)
}

/// Reads an escaped label value up to its closing quote and returns it with the text after the quote.
fn unescape_until_quote(text: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((index, c)) = chars.next() {
        match c {
            '"' => return Some((value, &text[index + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => value.push('\n'),
                other => value.push(other),
            },
            other => value.push(other),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labelled_and_plain_samples_parse() {
        let scrape = parse(
            "# TYPE x counter\n\
             sealcast_frames_rejected_total{reason=\"too_big\"} 2\n\
             sealcast_websocket_closes_total{role=\"publisher\",code=\"1009\"} 1\n\
             quoted{label=\"a\\\"b\"} 7\n\
             sealcast_sessions_created_total 3\n",
        );
        assert_eq!(
            scrape.value("sealcast_frames_rejected_total", &[("reason", "too_big")]),
            2.0
        );
        assert_eq!(
            scrape.value(
                "sealcast_websocket_closes_total",
                &[("code", "1009"), ("role", "publisher")]
            ),
            1.0
        );
        assert_eq!(scrape.value("quoted", &[("label", "a\"b")]), 7.0);
        assert_eq!(scrape.value("sealcast_sessions_created_total", &[]), 3.0);
        assert_eq!(
            scrape.value("sealcast_frames_rejected_total", &[("reason", "other")]),
            0.0
        );
    }
}
