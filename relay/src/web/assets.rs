//! The files of the patient page and the sign-in page, embedded in the binary
//! at build time from `relay/web/`. The folder's tests, test helpers and
//! README are not served.

/// One embedded file.
#[derive(Debug)]
pub(crate) struct Asset {
    /// File name, the last segment of its URL under the page's path.
    pub(crate) name: &'static str,
    /// `Content-Type` it is served with.
    pub(crate) content_type: &'static str,
    /// The file's bytes.
    pub(crate) bytes: &'static [u8],
}

/// A page and the files served under its path.
#[derive(Debug)]
pub(crate) struct Page {
    /// Path of the page itself, such as `/join`.
    pub(crate) path: &'static str,
    /// Name of the page in error messages.
    pub(crate) title: &'static str,
    /// Name of the HTML file served at `path` and at `path/`.
    pub(crate) entry: &'static str,
    /// Every file served at `path/NAME`, the entry included.
    pub(crate) files: &'static [&'static Asset],
}

impl Page {
    /// Returns this page's embedded file with this name.
    pub(crate) fn find(&self, name: &str) -> Option<&'static Asset> {
        self.files.iter().copied().find(|asset| asset.name == name)
    }
}

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

// Files that both pages use.
static JOIN_CSS: Asset = asset!("join.css", CSS);
static ICON: Asset = asset!("icon.svg", SVG);

/// The patient page, which a patient's invite link opens.
pub(crate) static JOIN: Page = Page {
    path: "/join",
    title: "patient page",
    entry: "join.html",
    files: &[
        &asset!("join.html", HTML),
        &JOIN_CSS,
        &ICON,
        &asset!("app.js", JAVASCRIPT),
        &asset!("authorship.js", JAVASCRIPT),
        &asset!("bytes.js", JAVASCRIPT),
        &asset!("connection.js", JAVASCRIPT),
        &asset!("ed25519.js", JAVASCRIPT),
        &asset!("invite.js", JAVASCRIPT),
        &asset!("json-request.js", JAVASCRIPT),
        &asset!("json.js", JAVASCRIPT),
        &asset!("opener.js", JAVASCRIPT),
        &asset!("paired-keys.js", JAVASCRIPT),
        &asset!("pairing.js", JAVASCRIPT),
        &asset!("pairing-relay.js", JAVASCRIPT),
        &asset!("pairing-view.js", JAVASCRIPT),
        &asset!("protocol.js", JAVASCRIPT),
        &asset!("transcript.js", JAVASCRIPT),
        &asset!("view.js", JAVASCRIPT),
        &asset!("words.js", JAVASCRIPT),
    ],
};

/// The staff sign-in page, which a magic link opens.
pub(crate) static LOGIN: Page = Page {
    path: "/login",
    title: "sign-in page",
    entry: "login.html",
    files: &[
        &asset!("login.html", HTML),
        &JOIN_CSS,
        &asset!("login.css", CSS),
        &ICON,
        &asset!("login.js", JAVASCRIPT),
        &asset!("login-api.js", JAVASCRIPT),
        &asset!("login-view.js", JAVASCRIPT),
    ],
};

/// Every served page. A test checks their files against the folder.
pub(crate) static PAGES: [&Page; 2] = [&JOIN, &LOGIN];

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::PathBuf;

    use super::*;

    /// Entries of `relay/web/` that no page serves.
    const NOT_SERVED: [&str; 3] = ["README.md", "test", "test-support"];

    fn web_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("web")
    }

    fn all_assets() -> impl Iterator<Item = &'static Asset> {
        PAGES.iter().flat_map(|page| page.files.iter().copied())
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
        let embedded: BTreeSet<String> = all_assets().map(|a| a.name.to_owned()).collect();
        assert_eq!(
            embedded, on_disk,
            "the pages' files and relay/web/ list different files"
        );
    }

    #[test]
    fn embedded_bytes_match_files() {
        for asset in all_assets() {
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
        for asset in all_assets() {
            let expected = match asset.name.rsplit_once('.').map(|(_, ext)| ext) {
                Some("js") => JAVASCRIPT,
                Some("css") => CSS,
                Some("html") => HTML,
                Some("svg") => SVG,
                other => panic!("no content type for extension {other:?}"),
            };
            assert_eq!(asset.content_type, expected, "{}", asset.name);
        }
    }

    #[test]
    fn pages_list_their_entry_once() {
        for page in PAGES {
            let entries = page.files.iter().filter(|a| a.name == page.entry).count();
            assert_eq!(entries, 1, "{} in {}", page.entry, page.path);
            assert!(page.find("README.md").is_none(), "{}", page.path);
        }
    }

    #[test]
    fn pages_serve_only_their_own_scripts() {
        assert!(LOGIN.find("app.js").is_none());
        assert!(LOGIN.find("protocol.js").is_none());
        assert!(JOIN.find("login.js").is_none());
        assert!(JOIN.find("login.html").is_none());
    }
}
