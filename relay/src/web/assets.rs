//! The files of the patient page, embedded in the binary at build time from
//! `relay/web/`. The folder's tests, test helpers and README are not served.

/// One embedded file of the patient page.
#[derive(Debug)]
pub(crate) struct Asset {
    /// File name, the last segment of its URL under `/join/`.
    pub(crate) name: &'static str,
    /// `Content-Type` it is served with.
    pub(crate) content_type: &'static str,
    /// The file's bytes.
    pub(crate) bytes: &'static [u8],
}

/// Name of the page itself, served at `/join` and `/join/`.
pub(crate) const PAGE: &str = "join.html";

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";
// Browsers run module scripts only with a JavaScript type (WHATWG HTML,
// "fetch a single module script"); text/javascript is the one RFC 9239 names.
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

macro_rules! asset {
    ($name:literal, $content_type:expr) => {
        Asset {
            name: $name,
            content_type: $content_type,
            bytes: include_bytes!(concat!("../../web/", $name)),
        }
    };
}

/// Every served file. A test checks this list against the folder.
pub(crate) static ASSETS: &[Asset] = &[
    asset!("join.html", HTML),
    asset!("join.css", CSS),
    asset!("icon.svg", SVG),
    asset!("app.js", JAVASCRIPT),
    asset!("bytes.js", JAVASCRIPT),
    asset!("connection.js", JAVASCRIPT),
    asset!("invite.js", JAVASCRIPT),
    asset!("json.js", JAVASCRIPT),
    asset!("opener.js", JAVASCRIPT),
    asset!("protocol.js", JAVASCRIPT),
    asset!("transcript.js", JAVASCRIPT),
    asset!("view.js", JAVASCRIPT),
    asset!("words.js", JAVASCRIPT),
];

/// Returns the embedded file with this name.
pub(crate) fn find(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|asset| asset.name == name)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::PathBuf;

    use super::*;

    /// Entries of `relay/web/` that are not part of the page.
    const NOT_SERVED: [&str; 3] = ["README.md", "test", "test-support"];

    fn web_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("web")
    }

    #[test]
    fn embedded_list_matches_folder() {
        let mut on_disk = BTreeSet::new();
        for entry in std::fs::read_dir(web_dir()).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            if NOT_SERVED.contains(&name.as_str()) {
                continue;
            }
            assert!(
                entry.file_type().unwrap().is_file(),
                "relay/web/{name} is a folder: embed its files or add it to NOT_SERVED"
            );
            on_disk.insert(name);
        }
        let embedded: BTreeSet<String> = ASSETS.iter().map(|a| a.name.to_owned()).collect();
        assert_eq!(
            embedded, on_disk,
            "ASSETS and relay/web/ list different files"
        );
    }

    #[test]
    fn embedded_bytes_match_files() {
        for asset in ASSETS {
            let on_disk = std::fs::read(web_dir().join(asset.name)).unwrap();
            assert!(
                on_disk == asset.bytes,
                "{} differs from the file",
                asset.name
            );
        }
    }

    #[test]
    fn content_types_follow_extensions() {
        for asset in ASSETS {
            let expected = match asset.name.rsplit_once('.').map(|(_, ext)| ext) {
                Some("js") => JAVASCRIPT,
                Some("css") => CSS,
                Some("html") => HTML,
                Some("svg") => SVG,
                other => panic!("no content type for extension {other:?}"),
            };
            assert_eq!(asset.content_type, expected, "{}", asset.name);
        }
        assert!(find(PAGE).is_some());
        assert!(find("README.md").is_none());
    }
}
