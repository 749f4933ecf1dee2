//! Tests of the mailer against the SMTP sink, TLS, silent and rejecting
//! servers, and the outbox folder.

use std::cell::RefCell;
use std::io::Write;
use std::net::{Ipv4Addr, TcpListener as StdTcpListener};
use std::sync::{Arc, Mutex, Once};
use std::time::Instant;

use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use sealcast_tests::smtp_sink::{self, SmtpSink};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::*;

const ADDRESS: &str = "dr.ada@clinic.example";
const EXPIRY: Duration = Duration::from_secs(15 * 60);
const WAIT: Duration = Duration::from_secs(10);

fn link() -> Secret {
    Secret::new(format!(
        "https://relay.clinic.example/login/verify?token={}",
        "Tk9_-x".repeat(20)
    ))
}

fn outbox_config(dir: &Path) -> MailConfig {
    MailConfig {
        smtp_url: None,
        from: "sealcast <noreply@clinic.example>".to_owned(),
        smtp_ca_file: None,
        outbox_dir: dir.to_path_buf(),
    }
}

fn smtp_config(url: &str) -> MailConfig {
    MailConfig {
        smtp_url: Some(Secret::new(url.to_owned())),
        from: "sealcast <noreply@clinic.example>".to_owned(),
        smtp_ca_file: None,
        outbox_dir: PathBuf::from("unused"),
    }
}

fn outbox_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Returns a port on 127.0.0.1 with no listener: bound by the OS, then
/// closed.
fn closed_port() -> u16 {
    let listener = StdTcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    listener.local_addr().unwrap().port()
}

/// A TLS proxy in front of the sink, standing in for a mail server whose
/// certificate comes from a private CA. It terminates implicit TLS with a
/// self-signed certificate for 127.0.0.1 and forwards plain SMTP to the sink.
struct TlsFront {
    addr: std::net::SocketAddr,
    certificate_pem: String,
    server: JoinHandle<()>,
}

impl TlsFront {
    async fn start(sink: &SmtpSink) -> TlsFront {
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let key = PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der());
        let chain = vec![CertificateDer::from(certified.cert.der().to_vec())];
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key.into())
            .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));

        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let upstream = sink.addr();
        let server = tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that rejects the certificate ends the
                    // handshake, which is not an error of the front.
                    let Ok(mut tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let mut plain = TcpStream::connect(upstream).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        TlsFront {
            addr,
            certificate_pem: certified.cert.pem(),
            server,
        }
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Log output captured from the current thread.
#[derive(Clone, Default)]
struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

thread_local! {
    static THREAD_CAPTURE: RefCell<Option<CapturedLogs>> = const { RefCell::new(None) };
}

/// The writer of the test subscriber: it appends to the capture of the
/// current thread and drops output of threads that capture nothing.
struct ThreadCaptureWriter;

impl Write for ThreadCaptureWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        THREAD_CAPTURE.with(|capture| {
            if let Some(logs) = capture.borrow().as_ref() {
                logs.0.lock().unwrap().extend_from_slice(bytes);
            }
        });
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Stops the capture of the current thread when dropped.
struct CaptureGuard;

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        THREAD_CAPTURE.with(|capture| capture.borrow_mut().take());
    }
}

impl CapturedLogs {
    /// Captures the INFO and higher events of the current thread until
    /// the guard drops.
    ///
    /// The subscriber is global because a thread-local one missed events
    /// when tests ran in parallel: `tracing` caches per callsite, for all
    /// threads, whether any subscriber is interested.
    fn install(&self) -> CaptureGuard {
        static GLOBAL_SUBSCRIBER: Once = Once::new();
        GLOBAL_SUBSCRIBER.call_once(|| {
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::INFO)
                .with_ansi(false)
                .with_writer(|| ThreadCaptureWriter)
                .finish();
            tracing::subscriber::set_global_default(subscriber)
                .expect("no other relay test installs a global subscriber");
        });
        THREAD_CAPTURE.with(|capture| *capture.borrow_mut() = Some(self.clone()));
        CaptureGuard
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn outbox_writes_parseable_private_file() {
    let temp = tempfile::tempdir().unwrap();
    let outbox = temp.path().join("mail").join("outbox");
    let mailer = Mailer::new(outbox_config(&outbox)).unwrap();
    assert_eq!(mode_of(&outbox), 0o700);
    assert_eq!(mailer.describe(), format!("folder {}", outbox.display()));

    let link = link();
    mailer
        .send_magic_link(ADDRESS, &link, EXPIRY)
        .await
        .unwrap();

    let files = outbox_files(&outbox);
    assert_eq!(files.len(), 1, "{files:?}");
    let file = &files[0];
    assert_eq!(mode_of(file), 0o600);
    let name = file.file_name().unwrap().to_str().unwrap();
    let (millis, rest) = name.split_once('-').unwrap();
    assert!(millis.parse::<u128>().is_ok(), "{name}");
    let random = rest.strip_suffix(".eml").unwrap();
    assert_eq!(random.len(), 16, "{name}");
    assert!(
        random.bytes().all(|byte| byte.is_ascii_hexdigit()),
        "{name}"
    );

    let raw = fs::read(file).unwrap();
    assert_eq!(
        smtp_sink::first_https_url(&raw).as_deref(),
        Some(link.expose())
    );
    let header = |name| smtp_sink::header_value(&raw, name);
    assert_eq!(header("Subject").as_deref(), Some(MAGIC_LINK_SUBJECT));
    assert_eq!(header("To").as_deref(), Some(ADDRESS));
    assert_eq!(
        header("From").as_deref(),
        Some("sealcast <noreply@clinic.example>")
    );
    assert_eq!(header("MIME-Version").as_deref(), Some("1.0"));
    assert_eq!(
        header("Content-Type").as_deref(),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(header("Content-Transfer-Encoding").as_deref(), Some("7bit"));
    assert!(header("Date").is_some());
    assert!(header("Message-ID").is_some());
}

#[tokio::test]
async fn outbox_files_are_distinct() {
    let temp = tempfile::tempdir().unwrap();
    let mailer = Mailer::new(outbox_config(temp.path())).unwrap();
    for _ in 0..3 {
        mailer
            .send_magic_link(ADDRESS, &link(), EXPIRY)
            .await
            .unwrap();
    }
    let files = outbox_files(temp.path());
    assert_eq!(files.len(), 3, "{files:?}");
    assert!(files.iter().all(|file| file.extension().unwrap() == "eml"));
}

#[test]
fn outbox_existing_folder_keeps_its_mode() {
    let temp = tempfile::tempdir().unwrap();
    fs::set_permissions(temp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    Mailer::new(outbox_config(temp.path())).unwrap();
    assert_eq!(mode_of(temp.path()), 0o755);
}

#[test]
fn outbox_path_that_is_a_file_rejected() {
    let temp = tempfile::tempdir().unwrap();
    let file = temp.path().join("outbox");
    fs::write(&file, b"not a folder").unwrap();
    let result = Mailer::new(outbox_config(&file));
    assert!(
        matches!(result, Err(MailError::OutboxDir { .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn invalid_recipient_rejected() {
    let temp = tempfile::tempdir().unwrap();
    let mailer = Mailer::new(outbox_config(temp.path())).unwrap();
    for to in [
        "",
        "ada",
        "ada@",
        "@clinic.example",
        "Ada <ada@clinic.example>",
        "a b@c.example",
    ] {
        let result = mailer.send_magic_link(to, &link(), EXPIRY).await;
        assert!(
            matches!(result, Err(MailError::InvalidRecipient { .. })),
            "{to:?}: {result:?}"
        );
    }
    assert!(outbox_files(temp.path()).is_empty());
}

#[tokio::test]
async fn invalid_link_rejected() {
    let temp = tempfile::tempdir().unwrap();
    let mailer = Mailer::new(outbox_config(temp.path())).unwrap();
    let too_long = format!(
        "https://relay.clinic.example/?t={}",
        "a".repeat(MAX_LINK_BYTES)
    );
    for link in [
        String::new(),
        "https://relay.clinic.example/ x".to_owned(),
        "https://relay.clinic.example/\r\nBcc: x@evil.example".to_owned(),
        "https://relay.clinic.example/é".to_owned(),
        too_long,
    ] {
        let result = mailer
            .send_magic_link(ADDRESS, &Secret::new(link.clone()), EXPIRY)
            .await;
        assert!(
            matches!(result, Err(MailError::InvalidLink)),
            "{link:?}: {result:?}"
        );
    }
    assert!(outbox_files(temp.path()).is_empty());
}

#[test]
fn invalid_sender_rejected() {
    let temp = tempfile::tempdir().unwrap();
    let mut config = outbox_config(temp.path());
    config.from = "not an address".to_owned();
    let result = Mailer::new(config);
    assert!(
        matches!(result, Err(MailError::InvalidFrom { .. })),
        "{result:?}"
    );
}

#[test]
fn text_names_expiry_and_ignore_advice() {
    let text = magic_link_text("https://relay.example/x", EXPIRY);
    assert!(text.contains("\r\nhttps://relay.example/x\r\n"), "{text}");
    assert!(text.contains("expires in 15 minutes."), "{text}");
    assert!(text.contains("If you did not ask to sign in, you can ignore this email."));
    assert!(!text.replace("\r\n", "").contains('\n'), "{text}");

    let cases = [
        (30, "1 minute."),
        (60, "1 minute."),
        (90, "2 minutes."),
        (3600, "60 minutes."),
    ];
    for (seconds, expected) in cases {
        let text = magic_link_text("https://relay.example/x", Duration::from_secs(seconds));
        assert!(text.contains(expected), "{seconds} s: {text}");
    }
}

#[tokio::test]
async fn smtp_delivers_to_sink() {
    let mut sink = SmtpSink::start().await;
    let mailer = Mailer::new(smtp_config(&format!("smtp://{}", sink.addr()))).unwrap();
    assert_eq!(mailer.describe(), format!("SMTP {}", sink.addr()));

    let link = link();
    mailer
        .send_magic_link(ADDRESS, &link, EXPIRY)
        .await
        .unwrap();
    let mail = sink.next_message(WAIT).await.unwrap();

    assert_eq!(mail.from, "noreply@clinic.example");
    assert_eq!(mail.recipients, vec![ADDRESS.to_owned()]);
    assert_eq!(mail.header("Subject").as_deref(), Some(MAGIC_LINK_SUBJECT));
    assert_eq!(mail.first_https_url().as_deref(), Some(link.expose()));
    let raw = String::from_utf8(mail.data.clone()).unwrap();
    assert!(raw.contains(&format!("\r\n{}\r\n", link.expose())), "{raw}");
    assert!(raw.contains("expires in 15 minutes"), "{raw}");
}

#[tokio::test]
async fn smtp_sends_each_message() {
    let mut sink = SmtpSink::start().await;
    let mailer = Mailer::new(smtp_config(&format!("smtp://{}", sink.addr()))).unwrap();
    let recipients = ["ada@clinic.example", "bob@clinic.example"];
    for to in recipients {
        mailer.send_magic_link(to, &link(), EXPIRY).await.unwrap();
    }
    for to in recipients {
        let mail = sink.next_message(WAIT).await.unwrap();
        assert_eq!(mail.recipients, vec![to.to_owned()]);
    }
}

#[tokio::test]
async fn smtps_with_private_root_delivers() {
    let mut sink = SmtpSink::start().await;
    let front = TlsFront::start(&sink).await;
    let temp = tempfile::tempdir().unwrap();
    let ca_file = temp.path().join("mail-ca.pem");
    fs::write(&ca_file, &front.certificate_pem).unwrap();

    let mut config = smtp_config(&format!("smtps://{}", front.addr));
    config.smtp_ca_file = Some(ca_file);
    let mailer = Mailer::new(config).unwrap();
    let link = link();
    mailer
        .send_magic_link(ADDRESS, &link, EXPIRY)
        .await
        .unwrap();

    let mail = sink.next_message(WAIT).await.unwrap();
    assert_eq!(mail.recipients, vec![ADDRESS.to_owned()]);
    assert_eq!(mail.first_https_url().as_deref(), Some(link.expose()));
}

#[tokio::test]
async fn smtps_untrusted_certificate_rejected() {
    let mut sink = SmtpSink::start().await;
    let front = TlsFront::start(&sink).await;
    let mailer = Mailer::new(smtp_config(&format!("smtps://{}", front.addr))).unwrap();

    let result = mailer.send_magic_link(ADDRESS, &link(), EXPIRY).await;
    let Err(MailError::Smtp(error)) = result else {
        panic!("expected a TLS failure, got {result:?}");
    };
    // lettre reports a failed handshake as a connection error.
    let text = error.to_string();
    assert!(text.contains("invalid peer certificate"), "{text}");
    let delivered = sink.next_message(Duration::from_millis(200)).await;
    assert!(delivered.is_none(), "{delivered:?}");
}

#[tokio::test]
async fn smtp_closed_port_fails_fast() {
    let url = format!("smtp://127.0.0.1:{}", closed_port());
    let mailer = Mailer::new(smtp_config(&url)).unwrap();

    let started = Instant::now();
    let result = mailer.send_magic_link(ADDRESS, &link(), EXPIRY).await;
    assert!(started.elapsed() < SEND_TIMEOUT, "{:?}", started.elapsed());

    let Err(error) = result else {
        panic!("sending to a closed port succeeded");
    };
    assert!(matches!(error, MailError::Smtp(_)), "{error:?}");
    assert!(
        error.to_string().starts_with("SMTP delivery failed: "),
        "{error}"
    );
}

#[tokio::test]
async fn smtp_silent_server_times_out() {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let url = format!("smtp://{}", listener.local_addr().unwrap());
    // Accepts and reads but never sends the greeting.
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buffer = [0u8; 1024];
        while stream.read(&mut buffer).await.unwrap_or(0) > 0 {}
    });

    let timeout = Duration::from_millis(300);
    let mailer = Mailer::new(smtp_config(&url))
        .unwrap()
        .with_send_timeout(timeout);
    let started = Instant::now();
    let result = mailer.send_magic_link(ADDRESS, &link(), EXPIRY).await;
    let elapsed = started.elapsed();
    server.abort();

    assert!(
        matches!(result, Err(MailError::Timeout(t)) if t == timeout),
        "{result:?}"
    );
    assert!(elapsed >= timeout, "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

#[tokio::test]
async fn smtp_rejection_keeps_only_the_code() {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let url = format!("smtp://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        stream
            .write_all(format!("554 5.7.1 {ADDRESS} is not welcome\r\n").as_bytes())
            .await
            .unwrap();
        let mut buffer = [0u8; 1024];
        while stream.read(&mut buffer).await.unwrap_or(0) > 0 {}
    });

    let mailer = Mailer::new(smtp_config(&url)).unwrap();
    let result = mailer.send_magic_link(ADDRESS, &link(), EXPIRY).await;
    server.abort();

    let Err(error) = result else {
        panic!("sending to a rejecting server succeeded");
    };
    assert!(
        matches!(&error, MailError::Rejected { code, permanent: true } if code == "554"),
        "{error:?}"
    );
    assert!(!error.to_string().contains(ADDRESS), "{error}");
}

#[tokio::test]
async fn logs_omit_address_and_link() {
    let logs = CapturedLogs::default();
    let _guard = logs.install();
    let link = link();

    let temp = tempfile::tempdir().unwrap();
    let outbox = Mailer::new(outbox_config(temp.path())).unwrap();
    outbox
        .send_magic_link(ADDRESS, &link, EXPIRY)
        .await
        .unwrap();

    let url = format!("smtp://127.0.0.1:{}", closed_port());
    let failing = Mailer::new(smtp_config(&url)).unwrap();
    failing
        .send_magic_link(ADDRESS, &link, EXPIRY)
        .await
        .unwrap_err();

    let text = logs.text();
    assert!(text.contains("sign-in mail sent"), "{text}");
    assert!(text.contains("failed to send sign-in mail"), "{text}");
    assert!(
        text.contains(&format!("recipient={}", recipient_tag(ADDRESS))),
        "{text}"
    );
    assert!(!text.contains(ADDRESS), "{text}");
    assert!(!text.contains("Tk9_-x"), "{text}");
}

#[test]
fn recipient_tag_ignores_case() {
    let tag = recipient_tag(ADDRESS);
    assert_eq!(tag.len(), 8);
    assert_eq!(tag, recipient_tag("Dr.Ada@Clinic.Example"));
    assert_ne!(tag, recipient_tag("bob@clinic.example"));
}

#[test]
fn smtp_description_has_no_credentials() {
    let cases = [
        (
            "smtps://ada:hunter2@mail.clinic.example",
            "SMTP mail.clinic.example:465",
        ),
        (
            "smtp://mail.clinic.example?tls=required",
            "SMTP mail.clinic.example:587",
        ),
        (
            "smtp://mail.clinic.example?tls=opportunistic",
            "SMTP mail.clinic.example:587",
        ),
        ("smtp://mail.clinic.example", "SMTP mail.clinic.example:25"),
        ("smtp://ada:hunter2@127.0.0.1:2525", "SMTP 127.0.0.1:2525"),
    ];
    for (url, expected) in cases {
        let config = smtp_config(url);
        assert!(!format!("{config:?}").contains("hunter2"), "{config:?}");
        let mailer = Mailer::new(config).unwrap();
        assert_eq!(mailer.describe(), expected);
        assert!(!format!("{mailer:?}").contains("hunter2"), "{mailer:?}");
    }
}

#[test]
fn invalid_smtp_urls_rejected() {
    for url in [
        "",
        "mail.clinic.example",
        "ftp://ada:hunter2@mail.clinic.example",
        "smtp://ada:hunter2@mail.clinic.example?tls=sometimes",
        "smtp://",
    ] {
        let result = Mailer::new(smtp_config(url));
        let Err(error) = result else {
            panic!("{url:?} was accepted");
        };
        assert!(
            matches!(error, MailError::InvalidSmtpUrl { .. }),
            "{url:?}: {error:?}"
        );
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }
}

#[test]
fn ca_file_adds_a_root() {
    let temp = tempfile::tempdir().unwrap();
    let certified =
        rcgen::generate_simple_self_signed(vec!["mail.clinic.example".to_owned()]).unwrap();
    let ca_file = temp.path().join("mail-ca.pem");
    fs::write(&ca_file, certified.cert.pem()).unwrap();

    for url in [
        "smtp://mail.clinic.example?tls=required",
        "smtps://mail.clinic.example",
    ] {
        let mut config = smtp_config(url);
        config.smtp_ca_file = Some(ca_file.clone());
        Mailer::new(config).unwrap();
    }
}

#[test]
fn ca_file_errors() {
    let temp = tempfile::tempdir().unwrap();
    let empty = temp.path().join("empty.pem");
    fs::write(&empty, b"no certificate here\n").unwrap();
    let missing = temp.path().join("missing.pem");
    let certified =
        rcgen::generate_simple_self_signed(vec!["mail.clinic.example".to_owned()]).unwrap();
    let valid = temp.path().join("valid.pem");
    fs::write(&valid, certified.cert.pem()).unwrap();

    let with_ca = |url: &str, path: &Path| {
        let mut config = smtp_config(url);
        config.smtp_ca_file = Some(path.to_path_buf());
        Mailer::new(config)
    };
    let required = "smtp://mail.clinic.example?tls=required";

    let result = with_ca(required, &empty);
    assert!(
        matches!(result, Err(MailError::NoCaCertificate { .. })),
        "{result:?}"
    );
    let result = with_ca(required, &missing);
    assert!(
        matches!(result, Err(MailError::CaFile { .. })),
        "{result:?}"
    );
    let result = with_ca("smtp://mail.clinic.example", &valid);
    assert!(
        matches!(result, Err(MailError::CaFileWithoutTls)),
        "{result:?}"
    );
}
