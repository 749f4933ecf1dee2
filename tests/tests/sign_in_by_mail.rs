//! The whole staff sign-in through a real SMTP listener. The relay process
//! sends the magic link by SMTP to a sink on loopback. The test reads the
//! link from the received mail and confirms it as the sign-in page does, and
//! the device's tokens then start, publish and end a session.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use sealcast_client::auth::login::{wait_for_approval, Approval};
use sealcast_client::auth::outbox::confirm_link;
use sealcast_client::auth::{AccountsApi, DeviceCredentials, SignedInDevice};
use sealcast_client::{KeyStore, TlsSettings};
use sealcast_protocol::auth::Role;
use sealcast_tests::process::RelayProcess;
use sealcast_tests::sample::sample_finals;
use sealcast_tests::session::{follow_until_end, LiveSession};
use sealcast_tests::smtp_sink::SmtpSink;
use sealcast_tests::staff::{admin, create_organization};
use url::Url;

/// Maximum wait for the relay's mail to reach the sink.
const MAIL_WAIT: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn magic_link_arrives_by_smtp_and_signs_in() {
    let mut sink = SmtpSink::start().await;
    let data = tempfile::tempdir().unwrap();
    let smtp_url = format!("smtp://{}", sink.addr());
    let relay = RelayProcess::start(
        data.path(),
        "127.0.0.1:0",
        &[
            "--smtp-url",
            &smtp_url,
            "--mail-from",
            "sealcast <sign-in@clinic.example>",
        ],
    );
    let org = create_organization(&relay.data_dir);
    let email = "dr.mail@clinic.example";
    admin(
        &relay.data_dir,
        &[
            "create-user",
            "--org",
            &org,
            "--email",
            email,
            "--role",
            Role::Clinician.as_str(),
        ],
    );

    let url = Url::parse(&relay.base_url()).unwrap();
    let ca_cert = relay.ca_cert();
    let tls = TlsSettings::new(Some(&ca_cert)).unwrap();
    let api = AccountsApi::new(&url, &tls).unwrap();
    let key_store_dir = tempfile::tempdir().unwrap();
    let key_store = KeyStore::open(key_store_dir.path()).unwrap();
    let mut credentials = DeviceCredentials::generate(url.clone(), Some(ca_cert.clone())).unwrap();
    let started = api
        .start_login(&credentials.key, email, Some("mail test device"))
        .await
        .unwrap();

    let mail = sink
        .next_message(MAIL_WAIT)
        .await
        .expect("the relay sent no sign-in mail to the SMTP sink");
    assert_eq!(mail.recipients, vec![email.to_string()]);
    assert_eq!(mail.from, "sign-in@clinic.example");
    let subject = mail.header("Subject").unwrap_or_default();
    assert!(subject.contains("sign-in link"), "subject: {subject}");
    let link = mail.first_https_url().expect("the mail contains a link");
    assert!(
        link.starts_with(&format!("{url}login#token=")),
        "link {link} is not the relay's sign-in page with the token in the fragment"
    );
    assert!(
        !std::fs::exists(relay.outbox_dir()).unwrap_or(false),
        "a relay with SMTP settings must not write an outbox"
    );

    confirm_link(&url, &tls, &link).await.unwrap();
    let tokens = match wait_for_approval(&api, &credentials.key, &started)
        .await
        .unwrap()
    {
        Approval::Approved(tokens) => tokens,
        Approval::TotpRequired => panic!("a clinician needs no second factor"),
    };
    assert_eq!(tokens.user.email, email);
    assert_eq!(tokens.user.role, Role::Clinician);
    assert_eq!(tokens.user.organization_id, org);
    key_store.store_tokens(&mut credentials, tokens).unwrap();
    let device = SignedInDevice::new(key_store, credentials, Some(ca_cert.clone())).unwrap();

    // The same link cannot be confirmed twice.
    assert!(confirm_link(&url, &tls, &link).await.is_err());

    // The signed-in device runs a session end to end.
    let session = LiveSession::create_at(&url, &ca_cert, device.authorizer()).await;
    let follower = tokio::spawn(follow_until_end(
        session.follower(),
        Duration::from_secs(60),
    ));
    let mut publisher = session.publisher().await;
    for segment in sample_finals().iter().take(5) {
        publisher.publish(segment).await.unwrap();
    }
    publisher.end().await.unwrap();
    session.end().await;
    let outcome = follower.await.unwrap();
    assert!(
        outcome.ended,
        "the follower did not see the end: {outcome:?}"
    );
    assert_eq!(
        outcome.finals.len(),
        5,
        "final segments: {:?}",
        outcome.finals
    );
    assert_eq!(outcome.gaps, 0);
    assert!(outcome.rejected.is_empty(), "{:?}", outcome.rejected);

    let log = String::from_utf8_lossy(&relay.output()).into_owned();
    let token = link.split_once("#token=").unwrap().1;
    assert!(
        !log.contains(token),
        "the relay log contains the magic link token"
    );
    assert!(!log.contains(email), "the relay log contains the address");
}
