//! Outgoing mail: the sign-in link, sent over SMTP or written to an outbox
//! folder.
//!
//! With an SMTP URL the relay submits mail with lettre over tokio, with TLS
//! from rustls (ring), trusting the Mozilla roots of `webpki-roots` and an
//! optional private root. Without one it runs in development mode: every
//! message is written as an RFC 5322 `.eml` file that only the relay's user
//! can read, and nothing is sent.
//!
//! Logs never contain the link or the SMTP password, and name the recipient
//! only by `recipient`, the first 8 hex digits of the SHA-256 of the
//! lower-cased address, because staff addresses are personal data.
//!
//! NOTE: lettre keeps plain copies of the link (in the message and its SMTP
//! buffers) and of the SMTP password (in its `Credentials`), which are not
//! zeroized.

use std::fmt;
use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lettre::message::header::ContentTransferEncoding;
use lettre::message::{Body, Mailbox, Message, SinglePart};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::{self, SMTP_PORT, SUBMISSIONS_PORT, SUBMISSION_PORT};
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use metrics::{counter, describe_counter};
use rand::RngCore;
use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio::io::AsyncWriteExt;
use url::Url;
use zeroize::Zeroizing;

use crate::credentials::Secret;

/// Subject of the sign-in mail.
pub(crate) const MAGIC_LINK_SUBJECT: &str = "Your sealcast sign-in link";

/// Upper bound on one send, from connecting to the server's reply to the
/// message. lettre applies the same value to each network operation.
pub(crate) const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Mail sent or written to the outbox, label `transport` (`smtp` or
/// `outbox`).
pub(crate) const MAIL_SENT: &str = "sealcast_mail_sent_total";
/// Mail that failed, label `reason`, for example `timeout` or `rejected`.
pub(crate) const MAIL_FAILURES: &str = "sealcast_mail_failures_total";

/// Maximum length of a sign-in link in bytes. The link is one line of a 7bit
/// body, which RFC 5322 section 2.1.1 limits to 998 characters.
const MAX_LINK_BYTES: usize = 900;

/// Mail settings: the SMTP server or else the outbox folder, and the sender.
#[derive(Debug, Clone)]
pub(crate) struct MailConfig {
    /// SMTP server in lettre's URL form: `smtp://host:port` (no TLS),
    /// `smtp://host:port?tls=required` (STARTTLS) or
    /// `smtps://user:password@host:port` (TLS from the start). `None`
    /// writes mail to `outbox_dir` instead.
    pub(crate) smtp_url: Option<Secret>,
    /// The `From` mailbox, `address` or `Name <address>`.
    pub(crate) from: String,
    /// PEM file with a root certificate to trust, beside the Mozilla roots,
    /// for a mail server with a private CA.
    pub(crate) smtp_ca_file: Option<PathBuf>,
    /// Folder of `.eml` files in development mode, created with mode 0700.
    pub(crate) outbox_dir: PathBuf,
}

/// A failure to set up mail or to send one message.
#[derive(Debug, Error)]
pub(crate) enum MailError {
    /// The SMTP URL cannot be parsed or has an unknown scheme or `tls` value.
    #[error("invalid SMTP URL: {reason}: expected smtp://host:port, smtp://host:port?tls=required or smtps://user:password@host:port")]
    InvalidSmtpUrl {
        /// The parser's message, which never contains the URL.
        reason: String,
    },
    /// The sender mailbox cannot be parsed.
    #[error("invalid sender address {from:?}: {reason}")]
    InvalidFrom {
        /// The configured sender.
        from: String,
        /// The parser's message.
        reason: String,
    },
    /// A CA file is configured for a connection without TLS.
    #[error("an SMTP CA file is set but the SMTP URL uses no TLS: use smtp://host:port?tls=required or smtps://host:port")]
    CaFileWithoutTls,
    /// The CA file cannot be read or is not PEM.
    #[error("failed to read SMTP CA file {path}: {source}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// The I/O or PEM error.
        source: io::Error,
    },
    /// The CA file contains no certificate.
    #[error("no PEM certificate found in SMTP CA file {path}: expected a -----BEGIN CERTIFICATE----- block")]
    NoCaCertificate {
        /// The file.
        path: PathBuf,
    },
    /// lettre rejected the TLS setup, for example a malformed certificate.
    #[error("invalid TLS setup for the SMTP server: {0}")]
    Tls(smtp::Error),
    /// The outbox folder cannot be created or is not a folder.
    #[error("failed to prepare mail outbox folder {path}: {source}")]
    OutboxDir {
        /// The folder.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The recipient is not a valid address. The address is left out of the
    /// message because it is personal data.
    #[error("invalid recipient address: {reason}")]
    InvalidRecipient {
        /// The parser's message.
        reason: String,
    },
    /// The link is empty, too long, or has characters other than printable
    /// ASCII.
    #[error("invalid sign-in link: it must be 1 to 900 printable ASCII characters without spaces")]
    InvalidLink,
    /// lettre could not build the message.
    #[error("failed to build the message: {0}")]
    Build(#[from] lettre::error::Error),
    /// Sending took longer than the timeout.
    #[error("sending mail timed out after {} s: check that the SMTP server is reachable", .0.as_secs_f32())]
    Timeout(Duration),
    /// The server replied with a 4xx or 5xx code. Only the code is kept,
    /// because reply text often repeats the recipient address.
    #[error(
        "SMTP server rejected the message with reply code {code}{}",
        if *permanent { "" } else { ": a temporary failure, retry later" }
    )]
    Rejected {
        /// The three-digit reply code.
        code: String,
        /// True for a 5xx reply, false for a 4xx one that may succeed later.
        permanent: bool,
    },
    /// Connecting, TLS or the SMTP exchange failed.
    #[error("SMTP delivery failed: {0}")]
    Smtp(smtp::Error),
    /// The outbox file cannot be written.
    #[error("failed to write mail to outbox file {path}: {source}")]
    OutboxFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

impl MailError {
    /// Returns the `reason` label of [`MAIL_FAILURES`].
    fn reason(&self) -> &'static str {
        match self {
            MailError::InvalidSmtpUrl { .. }
            | MailError::InvalidFrom { .. }
            | MailError::CaFileWithoutTls
            | MailError::CaFile { .. }
            | MailError::NoCaCertificate { .. }
            | MailError::Tls(_)
            | MailError::OutboxDir { .. } => "config",
            MailError::InvalidRecipient { .. } => "invalid_recipient",
            MailError::InvalidLink => "invalid_link",
            MailError::Build(_) => "build",
            MailError::Timeout(_) => "timeout",
            MailError::Rejected { .. } => "rejected",
            MailError::Smtp(_) => "smtp",
            MailError::OutboxFile { .. } => "outbox",
        }
    }

    /// Returns true when the caller's recipient or link is invalid, as
    /// opposed to a failure of the mail setup or the server.
    fn is_bad_input(&self) -> bool {
        matches!(
            self,
            MailError::InvalidRecipient { .. } | MailError::InvalidLink
        )
    }
}

/// Sends the relay's mail through SMTP or into the outbox folder.
pub(crate) struct Mailer {
    transport: Transport,
    from: Mailbox,
    send_timeout: Duration,
    description: String,
}

enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Outbox(PathBuf),
}

impl Transport {
    fn label(&self) -> &'static str {
        match self {
            Transport::Smtp(_) => "smtp",
            Transport::Outbox(_) => "outbox",
        }
    }
}

impl fmt::Debug for Mailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailer")
            .field("transport", &self.description)
            .field("from", &self.from.to_string())
            .field("send_timeout", &self.send_timeout)
            .finish()
    }
}

impl Mailer {
    /// Sets up SMTP from `config.smtp_url`, or else the outbox folder.
    /// Nothing is sent and no connection is opened here.
    pub(crate) fn new(config: MailConfig) -> Result<Mailer, MailError> {
        describe_metrics();
        let from = config
            .from
            .parse::<Mailbox>()
            .map_err(|error| MailError::InvalidFrom {
                from: config.from.clone(),
                reason: error.to_string(),
            })?;

        let (transport, description) = match &config.smtp_url {
            Some(url) => smtp_transport(url, config.smtp_ca_file.as_deref())?,
            None => {
                prepare_outbox(&config.outbox_dir)?;
                tracing::warn!(
                    outbox = %config.outbox_dir.display(),
                    "no SMTP server configured: mail is written to the outbox folder and not sent"
                );
                let description = format!("folder {}", config.outbox_dir.display());
                (Transport::Outbox(config.outbox_dir), description)
            }
        };

        Ok(Mailer {
            transport,
            from,
            send_timeout: SEND_TIMEOUT,
            description,
        })
    }

    /// Replaces [`SEND_TIMEOUT`] as the bound on one send.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn with_send_timeout(mut self, timeout: Duration) -> Mailer {
        self.send_timeout = timeout;
        self
    }

    /// Returns `SMTP host:port` or `folder PATH`, for the start-up banner.
    /// It never contains credentials.
    pub(crate) fn describe(&self) -> &str {
        &self.description
    }

    /// Sends the sign-in `link` to `to`, saying that it expires after
    /// `expires_in`, and counts and logs the outcome.
    pub(crate) async fn send_magic_link(
        &self,
        to: &str,
        link: &Secret,
        expires_in: Duration,
    ) -> Result<(), MailError> {
        let recipient = recipient_tag(to);
        let transport = self.transport.label();
        let result = self.deliver_magic_link(to, link, expires_in).await;
        match &result {
            Ok(()) => {
                counter!(MAIL_SENT, "transport" => transport).increment(1);
                tracing::info!(%recipient, transport, "sign-in mail sent");
            }
            Err(error) => {
                counter!(MAIL_FAILURES, "reason" => error.reason()).increment(1);
                if error.is_bad_input() {
                    tracing::warn!(%recipient, transport, %error, "sign-in mail rejected");
                } else {
                    tracing::error!(%recipient, transport, %error, "failed to send sign-in mail");
                }
            }
        }
        result
    }

    async fn deliver_magic_link(
        &self,
        to: &str,
        link: &Secret,
        expires_in: Duration,
    ) -> Result<(), MailError> {
        let message = magic_link_message(&self.from, to, link, expires_in)?;
        match &self.transport {
            Transport::Smtp(smtp) => send_smtp(smtp, message, self.send_timeout).await,
            Transport::Outbox(dir) => {
                let contents = Zeroizing::new(message.formatted());
                let path = write_to_outbox(dir, &contents).await?;
                tracing::debug!(file = %path.display(), "sign-in mail written to the outbox");
                Ok(())
            }
        }
    }
}

/// Builds the plain-text sign-in message.
fn magic_link_message(
    from: &Mailbox,
    to: &str,
    link: &Secret,
    expires_in: Duration,
) -> Result<Message, MailError> {
    let to = to
        .parse::<Address>()
        .map_err(|error| MailError::InvalidRecipient {
            reason: error.to_string(),
        })?;
    let link = link.expose();
    let link_is_valid = !link.is_empty()
        && link.len() <= MAX_LINK_BYTES
        && link.bytes().all(|byte| byte.is_ascii_graphic());
    if !link_is_valid {
        return Err(MailError::InvalidLink);
    }

    // 7bit keeps the link on one intact line, where quoted-printable would
    // break it with soft line breaks. The text is ASCII with CRLF line ends
    // and no line over 998 characters, which is all 7bit requires.
    let text = Zeroizing::new(magic_link_text(link, expires_in));
    let body =
        Body::dangerous_pre_encoded(text.as_bytes().to_vec(), ContentTransferEncoding::SevenBit);
    let message = Message::builder()
        .from(from.clone())
        .to(Mailbox::new(None, to))
        .subject(MAGIC_LINK_SUBJECT)
        .message_id(None)
        .singlepart(SinglePart::plain(body))?;
    Ok(message)
}

fn magic_link_text(link: &str, expires_in: Duration) -> String {
    let minutes = expires_in.as_secs().div_ceil(60).max(1);
    let unit = if minutes == 1 { "minute" } else { "minutes" };
    format!(
        "Hello,\r\n\
         \r\n\
         Use this link to sign in to sealcast:\r\n\
         \r\n\
         {link}\r\n\
         \r\n\
         The link expires in {minutes} {unit}.\r\n\
         \r\n\
         If you did not ask to sign in, you can ignore this email.\r\n"
    )
}

/// Sends `message`, bounding the whole exchange by `timeout`.
async fn send_smtp(
    transport: &AsyncSmtpTransport<Tokio1Executor>,
    message: Message,
    timeout: Duration,
) -> Result<(), MailError> {
    let error = match tokio::time::timeout(timeout, transport.send(message)).await {
        Ok(Ok(_response)) => return Ok(()),
        Ok(Err(error)) => error,
        Err(_elapsed) => return Err(MailError::Timeout(timeout)),
    };
    if error.is_timeout() {
        return Err(MailError::Timeout(timeout));
    }
    match error.status() {
        Some(code) => Err(MailError::Rejected {
            code: code.to_string(),
            permanent: error.is_permanent(),
        }),
        None => Err(MailError::Smtp(error)),
    }
}

/// Builds the SMTP transport and its description, `SMTP host:port`.
fn smtp_transport(url: &Secret, ca_file: Option<&Path>) -> Result<(Transport, String), MailError> {
    let invalid_url = |reason: String| MailError::InvalidSmtpUrl { reason };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose())
        .map_err(|error| invalid_url(error.to_string()))?;

    // lettre has accepted the URL, so it parses and has a host.
    let parsed = Url::parse(url.expose()).map_err(|error| invalid_url(error.to_string()))?;
    let host = parsed
        .host_str()
        .ok_or_else(|| invalid_url("the URL has no host".to_owned()))?
        .to_owned();
    let mode = TlsMode::of(&parsed);
    let port = parsed.port().unwrap_or(mode.default_port());

    if let Some(path) = ca_file {
        builder = builder.tls(tls_with_root(mode, &host, path)?);
    }
    let transport = builder.timeout(Some(SEND_TIMEOUT)).build();
    Ok((Transport::Smtp(transport), format!("SMTP {host}:{port}")))
}

/// The TLS mode an SMTP URL selects, as lettre's `from_url` reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TlsMode {
    Plain,
    StartTlsRequired,
    StartTlsOpportunistic,
    Wrapper,
}

impl TlsMode {
    fn of(url: &Url) -> TlsMode {
        if url.scheme() == "smtps" {
            return TlsMode::Wrapper;
        }
        let tls = url
            .query_pairs()
            .find(|(key, _)| key == "tls")
            .map(|(_, value)| value);
        match tls.as_deref() {
            Some("required") => TlsMode::StartTlsRequired,
            Some("opportunistic") => TlsMode::StartTlsOpportunistic,
            _ => TlsMode::Plain,
        }
    }

    /// Returns the port lettre's `from_url` uses when the URL has none.
    fn default_port(self) -> u16 {
        match self {
            TlsMode::Plain => SMTP_PORT,
            TlsMode::StartTlsRequired | TlsMode::StartTlsOpportunistic => SUBMISSION_PORT,
            TlsMode::Wrapper => SUBMISSIONS_PORT,
        }
    }
}

/// Builds TLS settings for `mode` that also trust the certificates in `path`.
fn tls_with_root(mode: TlsMode, host: &str, path: &Path) -> Result<Tls, MailError> {
    if mode == TlsMode::Plain {
        return Err(MailError::CaFileWithoutTls);
    }
    let file_error = |source| MailError::CaFile {
        path: path.to_path_buf(),
        source,
    };
    let pem = fs::read(path).map_err(file_error)?;
    let certificates = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(file_error)?;
    if certificates.is_empty() {
        return Err(MailError::NoCaCertificate {
            path: path.to_path_buf(),
        });
    }

    let root = Certificate::from_pem(&pem).map_err(MailError::Tls)?;
    let parameters = TlsParameters::builder(host.to_owned())
        .add_root_certificate(root)
        .build_rustls()
        .map_err(MailError::Tls)?;
    Ok(match mode {
        TlsMode::Wrapper => Tls::Wrapper(parameters),
        TlsMode::StartTlsOpportunistic => Tls::Opportunistic(parameters),
        TlsMode::StartTlsRequired | TlsMode::Plain => Tls::Required(parameters),
    })
}

/// Creates the outbox folder with mode 0700, or checks an existing one.
fn prepare_outbox(dir: &Path) -> Result<(), MailError> {
    let error = |source| MailError::OutboxDir {
        path: dir.to_path_buf(),
        source,
    };
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(error)?;

    // An existing folder keeps its mode: it may be shared, like /tmp, and
    // is not the relay's to change.
    let mode = fs::metadata(dir).map_err(error)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            outbox = %dir.display(),
            mode = %format!("{:o}", mode & 0o777),
            "the mail outbox folder is open to other users, who can read sign-in links in it"
        );
    }
    Ok(())
}

/// Writes `contents` to `<unix-millis>-<random>.eml` in `dir` with mode 0600.
/// The file appears under its final name only once complete.
async fn write_to_outbox(dir: &Path, contents: &[u8]) -> Result<PathBuf, MailError> {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let mut random = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut random);
    let suffix: String = random.iter().map(|byte| format!("{byte:02x}")).collect();
    let name = format!("{millis}-{suffix}.eml");
    let path = dir.join(&name);
    let partial = dir.join(format!(".{name}.partial"));

    let written = write_new_file(&partial, contents).await;
    let renamed = match written {
        Ok(()) => tokio::fs::rename(&partial, &path).await,
        Err(error) => Err(error),
    };
    if let Err(source) = renamed {
        // Best effort: the partial file may not exist.
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(MailError::OutboxFile { path, source });
    }
    Ok(path)
}

async fn write_new_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .await?;
    file.write_all(contents).await?;
    file.sync_all().await
}

/// Returns the first 8 hex digits of the SHA-256 of the lower-cased address,
/// to tell recipients apart in logs without naming them.
fn recipient_tag(address: &str) -> String {
    let digest = Sha256::digest(address.trim().to_lowercase().as_bytes());
    digest[..4]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn describe_metrics() {
    describe_counter!(MAIL_SENT, "Mail sent over SMTP or written to the outbox.");
    describe_counter!(MAIL_FAILURES, "Mail that failed to send, by reason.");
    // Exported at zero so that alerts on increase() see a series from the start.
    let reasons = [
        "config",
        "invalid_recipient",
        "invalid_link",
        "build",
        "timeout",
        "rejected",
        "smtp",
        "outbox",
    ];
    for reason in reasons {
        counter!(MAIL_FAILURES, "reason" => reason).increment(0);
    }
}

#[cfg(test)]
mod tests;
