//! A real SMTP server on 127.0.0.1 that hands every message it receives to
//! the test, for checking the mail the relay sends.
//!
//! It speaks the part of RFC 5321 that a client needs to submit mail:
//! greeting, EHLO/HELO, MAIL FROM, RCPT TO, DATA with dot-unstuffing, RSET,
//! NOOP and QUIT, with any number of messages per connection. It accepts
//! every sender and recipient, and offers neither TLS nor AUTH.
//!
//! Crates that embed an SMTP server were not a fit: `mailin` keeps its
//! session in a type that is not `Send`, so it cannot live in a tokio task,
//! and `mailin-embedded` serves on blocking threads with no way to stop.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use mailparse::{MailHeaderMap, ParsedMail};
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

/// Maximum line length in bytes, CRLF included (RFC 5321 section 4.5.3.1.6).
const MAX_LINE_BYTES: u64 = 1000;

/// Maximum message size in bytes, after dot-unstuffing.
const MAX_MESSAGE_BYTES: usize = 10 * 1024 * 1024;

/// Name the sink gives itself in its greeting and EHLO reply.
const SERVER_NAME: &str = "sealcast-test-sink";

/// One message as the sink received it.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    /// The MAIL FROM address, empty for the null reverse-path `<>`.
    pub from: String,
    /// The RCPT TO addresses, in order.
    pub recipients: Vec<String>,
    /// The message as sent after DATA, dot-unstuffed, without the final
    /// `.` line.
    pub data: Vec<u8>,
}

impl ReceivedMail {
    /// Returns the first `https://` URL in the message's text parts.
    pub fn first_https_url(&self) -> Option<String> {
        first_https_url(&self.data)
    }

    /// Returns the decoded value of the first header called `name`.
    pub fn header(&self, name: &str) -> Option<String> {
        header_value(&self.data, name)
    }
}

/// A running SMTP sink. Dropping it stops the server and its connections.
#[derive(Debug)]
pub struct SmtpSink {
    addr: SocketAddr,
    messages: mpsc::UnboundedReceiver<ReceivedMail>,
    server: JoinHandle<()>,
}

impl SmtpSink {
    /// Starts the sink on 127.0.0.1 with a port chosen by the OS.
    pub async fn start() -> SmtpSink {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("failed to bind the SMTP sink to 127.0.0.1");
        let addr = listener
            .local_addr()
            .expect("a bound listener has a local address");
        let (sender, messages) = mpsc::unbounded_channel();
        let server = tokio::spawn(accept_connections(listener, sender));
        SmtpSink {
            addr,
            messages,
            server,
        }
    }

    /// Returns the address the sink listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits up to `timeout` for the next message, in the order the sink
    /// accepted them.
    pub async fn next_message(&mut self, timeout: Duration) -> Option<ReceivedMail> {
        tokio::time::timeout(timeout, self.messages.recv())
            .await
            .ok()
            .flatten()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Returns the first `https://` URL in the text parts of a raw RFC 5322
/// message, after undoing the parts' transfer encoding (quoted-printable
/// soft line breaks and `=3D` included). The URL ends at whitespace, a
/// quote or an angle bracket.
pub fn first_https_url(raw: &[u8]) -> Option<String> {
    let parsed = mailparse::parse_mail(raw).ok()?;
    first_url_in_part(&parsed)
}

/// Returns the decoded value of the first header called `name` in a raw
/// RFC 5322 message.
pub fn header_value(raw: &[u8], name: &str) -> Option<String> {
    let parsed = mailparse::parse_mail(raw).ok()?;
    parsed.headers.get_first_value(name)
}

fn first_url_in_part(part: &ParsedMail<'_>) -> Option<String> {
    if !part.subparts.is_empty() {
        return part.subparts.iter().find_map(first_url_in_part);
    }
    if !part.ctype.mimetype.starts_with("text/") {
        return None;
    }
    let text = part.get_body().ok()?;
    let start = text.find("https://")?;
    let rest = &text[start..];
    let end = rest
        .find(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '"' | '\''))
        .unwrap_or(rest.len());
    Some(rest[..end].to_owned())
}

async fn accept_connections(listener: TcpListener, sender: mpsc::UnboundedSender<ReceivedMail>) {
    // Owned here so that aborting this task also ends every connection.
    let mut connections = JoinSet::new();
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                connections.spawn(serve_connection(stream, sender.clone()));
            }
            Err(error) => {
                eprintln!("SMTP sink failed to accept a connection: {error}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        while connections.try_join_next().is_some() {}
    }
}

/// What the connection does after a command.
enum Next {
    Reply(String),
    ReadData,
    Quit,
}

/// The SMTP state of one connection.
#[derive(Default)]
struct Session {
    greeted: bool,
    from: Option<String>,
    recipients: Vec<String>,
}

impl Session {
    fn handle(&mut self, line: &str) -> Next {
        let (verb, argument) = match line.split_once(' ') {
            Some((verb, argument)) => (verb, argument.trim()),
            None => (line, ""),
        };
        match verb.to_ascii_uppercase().as_str() {
            "EHLO" | "HELO" if argument.is_empty() => reply("501 5.5.4 a domain is required"),
            "EHLO" => {
                self.greeted = true;
                self.reset();
                Next::Reply(format!(
                    "250-{SERVER_NAME} greets {argument}\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"
                ))
            }
            "HELO" => {
                self.greeted = true;
                self.reset();
                Next::Reply(format!("250 {SERVER_NAME}\r\n"))
            }
            "MAIL" => self.mail(argument),
            "RCPT" => self.rcpt(argument),
            "DATA" if self.recipients.is_empty() => reply("503 5.5.1 no valid recipients"),
            "DATA" => Next::ReadData,
            "RSET" => {
                self.reset();
                reply("250 2.0.0 OK")
            }
            "NOOP" => reply("250 2.0.0 OK"),
            "QUIT" => Next::Quit,
            _ => reply("500 5.5.2 command not recognized"),
        }
    }

    fn mail(&mut self, argument: &str) -> Next {
        if !self.greeted {
            return reply("503 5.5.1 send EHLO or HELO first");
        }
        if self.from.is_some() {
            return reply("503 5.5.1 nested MAIL command");
        }
        match parse_path(argument, "FROM:") {
            Some(address) => {
                self.from = Some(address);
                reply("250 2.1.0 OK")
            }
            None => reply("501 5.5.4 syntax: MAIL FROM:<address>"),
        }
    }

    fn rcpt(&mut self, argument: &str) -> Next {
        if self.from.is_none() {
            return reply("503 5.5.1 send MAIL first");
        }
        match parse_path(argument, "TO:") {
            Some(address) if !address.is_empty() => {
                self.recipients.push(address);
                reply("250 2.1.5 OK")
            }
            _ => reply("501 5.5.4 syntax: RCPT TO:<address>"),
        }
    }

    fn take_transaction(&mut self, data: Vec<u8>) -> ReceivedMail {
        ReceivedMail {
            from: self.from.take().unwrap_or_default(),
            recipients: std::mem::take(&mut self.recipients),
            data,
        }
    }

    fn reset(&mut self) {
        self.from = None;
        self.recipients.clear();
    }
}

fn reply(text: &str) -> Next {
    Next::Reply(format!("{text}\r\n"))
}

/// Reads `FROM:<address>` or `TO:<address>`, with any ESMTP parameters
/// after the closing bracket, and returns the address.
fn parse_path(argument: &str, keyword: &str) -> Option<String> {
    let head = argument.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let path = argument[keyword.len()..].trim_start().strip_prefix('<')?;
    let (address, _parameters) = path.split_once('>')?;
    Some(address.to_owned())
}

async fn serve_connection(
    stream: TcpStream,
    sender: mpsc::UnboundedSender<ReceivedMail>,
) -> io::Result<()> {
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    let mut session = Session::default();
    writer
        .write_all(format!("220 {SERVER_NAME} ESMTP ready\r\n").as_bytes())
        .await?;

    let mut line = Vec::new();
    loop {
        match read_line(&mut reader, &mut line).await? {
            Line::End => return Ok(()),
            Line::TooLong => {
                writer.write_all(b"500 5.5.2 line too long\r\n").await?;
                return Ok(());
            }
            Line::Complete => {}
        }
        let command = String::from_utf8_lossy(&line);
        match session.handle(command.trim_end_matches(['\r', '\n'])) {
            Next::Reply(text) => writer.write_all(text.as_bytes()).await?,
            Next::Quit => {
                writer.write_all(b"221 2.0.0 bye\r\n").await?;
                return Ok(());
            }
            Next::ReadData => {
                writer
                    .write_all(b"354 end data with <CRLF>.<CRLF>\r\n")
                    .await?;
                let Some(data) = read_data(&mut reader, &mut writer).await? else {
                    return Ok(());
                };
                let mail = session.take_transaction(data);
                let Ok(()) = sender.send(mail) else {
                    writer.write_all(b"451 4.3.0 sink closed\r\n").await?;
                    return Ok(());
                };
                writer.write_all(b"250 2.0.0 OK queued\r\n").await?;
            }
        }
    }
}

/// Reads the message after DATA up to the `.` line and undoes the dot
/// stuffing (RFC 5321 section 4.5.2). Returns `None` when the connection
/// closed first or the message was too large, after replying to the latter.
async fn read_data<R, W>(reader: &mut R, writer: &mut W) -> io::Result<Option<Vec<u8>>>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut data = Vec::new();
    let mut line = Vec::new();
    loop {
        match read_line(reader, &mut line).await? {
            Line::End => return Ok(None),
            Line::TooLong => {
                writer.write_all(b"500 5.5.2 line too long\r\n").await?;
                return Ok(None);
            }
            Line::Complete => {}
        }
        if line == b".\r\n" {
            return Ok(Some(data));
        }
        let unstuffed = line.strip_prefix(b".").unwrap_or(&line);
        data.extend_from_slice(unstuffed);
        if data.len() > MAX_MESSAGE_BYTES {
            writer.write_all(b"552 5.3.4 message too large\r\n").await?;
            return Ok(None);
        }
    }
}

/// Outcome of reading one line.
enum Line {
    Complete,
    TooLong,
    End,
}

async fn read_line<R>(reader: &mut R, line: &mut Vec<u8>) -> io::Result<Line>
where
    R: AsyncBufRead + Unpin,
{
    line.clear();
    let read = (&mut *reader)
        .take(MAX_LINE_BYTES)
        .read_until(b'\n', line)
        .await?;
    if read == 0 {
        return Ok(Line::End);
    }
    if line.ends_with(b"\n") {
        return Ok(Line::Complete);
    }
    if read as u64 == MAX_LINE_BYTES {
        return Ok(Line::TooLong);
    }
    // The peer closed the connection in the middle of a line.
    Ok(Line::End)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    /// A line-based SMTP client for driving the sink by hand.
    struct Client {
        reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
        writer: tokio::net::tcp::OwnedWriteHalf,
    }

    impl Client {
        async fn connect(sink: &SmtpSink) -> Client {
            let stream = TcpStream::connect(sink.addr()).await.unwrap();
            let (reader, writer) = stream.into_split();
            let mut client = Client {
                reader: BufReader::new(reader),
                writer,
            };
            assert!(client.reply().await.starts_with("220 "));
            client
        }

        /// Reads one reply, joining the lines of a multiline reply.
        async fn reply(&mut self) -> String {
            let mut reply = String::new();
            loop {
                let mut line = String::new();
                let read = tokio::time::timeout(WAIT, self.reader.read_line(&mut line))
                    .await
                    .unwrap()
                    .unwrap();
                if read == 0 {
                    return reply;
                }
                reply.push_str(&line);
                if line.as_bytes().get(3) != Some(&b'-') {
                    return reply;
                }
            }
        }

        async fn send(&mut self, line: &str) -> String {
            self.writer
                .write_all(format!("{line}\r\n").as_bytes())
                .await
                .unwrap();
            self.reply().await
        }

        /// Sends `line` and checks that the reply starts with `code`.
        async fn expect(&mut self, line: &str, code: &str) {
            let reply = self.send(line).await;
            assert!(reply.starts_with(code), "{line}: {reply}");
        }
    }

    #[tokio::test]
    async fn two_messages_on_one_connection() {
        let mut sink = SmtpSink::start().await;
        let mut client = Client::connect(&sink).await;

        let ehlo = client.send("EHLO client.example").await;
        assert!(ehlo.starts_with("250-"), "{ehlo}");
        assert!(ehlo.contains("8BITMIME"), "{ehlo}");

        for (index, recipient) in ["ada@clinic.example", "bob@clinic.example"]
            .iter()
            .enumerate()
        {
            client
                .expect("MAIL FROM:<relay@clinic.example> BODY=8BITMIME", "250 ")
                .await;
            client
                .expect(&format!("RCPT TO:<{recipient}>"), "250 ")
                .await;
            client.expect("DATA", "354 ").await;
            let body = format!("Subject: message {index}\r\n\r\n..leading dot\r\n.\r\n");
            client.writer.write_all(body.as_bytes()).await.unwrap();
            assert!(client.reply().await.starts_with("250 "));

            let mail = sink.next_message(WAIT).await.unwrap();
            assert_eq!(mail.from, "relay@clinic.example");
            assert_eq!(mail.recipients, vec![recipient.to_string()]);
            let expected = format!("Subject: message {index}\r\n\r\n.leading dot\r\n");
            assert_eq!(String::from_utf8(mail.data).unwrap(), expected);
        }

        client.expect("QUIT", "221 ").await;
        let extra = sink.next_message(Duration::from_millis(100)).await;
        assert!(extra.is_none(), "{extra:?}");
    }

    #[tokio::test]
    async fn rset_drops_the_transaction() {
        let mut sink = SmtpSink::start().await;
        let mut client = Client::connect(&sink).await;
        client.expect("HELO client.example", "250 ").await;
        client.expect("MAIL FROM:<>", "250 ").await;
        client.expect("RCPT TO:<old@clinic.example>", "250 ").await;
        client.expect("RSET", "250 ").await;
        client.expect("NOOP", "250 ").await;

        client.expect("DATA", "503 ").await;
        client.expect("MAIL FROM:<>", "250 ").await;
        client.expect("RCPT TO:<new@clinic.example>", "250 ").await;
        client.expect("DATA", "354 ").await;
        client.writer.write_all(b"hello\r\n.\r\n").await.unwrap();
        assert!(client.reply().await.starts_with("250 "));

        let mail = sink.next_message(WAIT).await.unwrap();
        assert_eq!(mail.from, "");
        assert_eq!(mail.recipients, vec!["new@clinic.example".to_owned()]);
        assert_eq!(mail.data, b"hello\r\n");
    }

    #[tokio::test]
    async fn commands_out_of_order_rejected() {
        let sink = SmtpSink::start().await;
        let mut client = Client::connect(&sink).await;
        let steps = [
            ("MAIL FROM:<a@b.example>", "503 "),
            ("EHLO", "501 "),
            ("EHLO client.example", "250"),
            ("RCPT TO:<a@b.example>", "503 "),
            ("MAIL TO:<a@b.example>", "501 "),
            ("MAIL FROM:a@b.example", "501 "),
            ("MAIL FROM:<a@b.example>", "250 "),
            ("MAIL FROM:<a@b.example>", "503 "),
            ("RCPT TO:<>", "501 "),
            ("VRFY a", "500 "),
        ];
        for (command, code) in steps {
            client.expect(command, code).await;
        }
    }

    #[tokio::test]
    async fn overlong_line_closes_connection() {
        let sink = SmtpSink::start().await;
        let mut client = Client::connect(&sink).await;
        // Exactly the limit with no line end, so the sink has read all of it
        // when it closes and the close is a FIN, not a reset.
        let long = "x".repeat(MAX_LINE_BYTES as usize);
        client.writer.write_all(long.as_bytes()).await.unwrap();
        assert!(client.reply().await.starts_with("500 "));
        assert_eq!(client.reply().await, "");
    }

    #[test]
    fn url_from_quoted_printable_body() {
        let raw = b"Subject: link\r\n\
            Content-Type: text/plain; charset=utf-8\r\n\
            Content-Transfer-Encoding: quoted-printable\r\n\
            \r\n\
            Sign in: https://relay.example/login?token=3Dabc=\r\n\
            def&next=3D%2F\r\n\
            more text\r\n";
        assert_eq!(
            first_https_url(raw).as_deref(),
            Some("https://relay.example/login?token=abcdef&next=%2F")
        );
    }

    #[test]
    fn url_from_multipart_plain_part() {
        let raw = b"Subject: link\r\n\
            MIME-Version: 1.0\r\n\
            Content-Type: multipart/alternative; boundary=\"b\"\r\n\
            \r\n\
            --b\r\n\
            Content-Type: text/plain\r\n\
            \r\n\
            Open <https://relay.example/a?t=1> now\r\n\
            --b--\r\n";
        assert_eq!(
            first_https_url(raw).as_deref(),
            Some("https://relay.example/a?t=1")
        );
    }

    #[test]
    fn url_absent() {
        let raw = b"Subject: none\r\n\r\nhttp://plain.example only\r\n";
        assert_eq!(first_https_url(raw), None);
        assert_eq!(header_value(raw, "subject").as_deref(), Some("none"));
    }
}
