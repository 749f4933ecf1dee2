//! Every kind of bad publisher and follower input gets its close code and
//! bumps its metric, and the relay keeps serving. The cases run in one test
//! so that the metric deltas are exact.

// Helpers fail by panicking, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{acks_until, metric_value, start_relay, FollowItem, Publisher, TestRelay, Ws};
use sealcast_protocol::api::{close, CreateSessionResponse, FollowerEvent};
use sealcast_protocol::SessionKey;
use sealcast_relay::Limits;

enum Input {
    Binary(Vec<u8>),
    Text(&'static str),
}

struct Case {
    name: &'static str,
    input: Input,
    code: u16,
    reason: &'static str,
}

fn cases(
    key: &SessionKey,
    session: &CreateSessionResponse,
    other: &CreateSessionResponse,
) -> Vec<Case> {
    let valid = Publisher::new(key, session).next_frame(true, 10);
    let mut wrong_version = valid.clone();
    wrong_version[0] = 2;
    let mut unknown_kind = valid.clone();
    unknown_kind[1] = 9;
    let mut too_long = valid.clone();
    too_long.push(0);
    let mut skipping = Publisher::new(key, session);
    skipping.next_frame(true, 10);

    vec![
        Case {
            name: "truncated",
            input: Input::Binary(valid[..40].to_vec()),
            code: close::MALFORMED_FRAME,
            reason: "malformed",
        },
        Case {
            name: "length mismatch",
            input: Input::Binary(too_long),
            code: close::MALFORMED_FRAME,
            reason: "malformed",
        },
        Case {
            name: "unknown kind",
            input: Input::Binary(unknown_kind),
            code: close::MALFORMED_FRAME,
            reason: "malformed",
        },
        Case {
            name: "version 2",
            input: Input::Binary(wrong_version),
            code: close::UNSUPPORTED_VERSION,
            reason: "unsupported_version",
        },
        Case {
            name: "other session",
            input: Input::Binary(Publisher::new(key, other).next_frame(true, 10)),
            code: close::WRONG_SESSION,
            reason: "wrong_session",
        },
        Case {
            name: "text message",
            input: Input::Text("{\"type\":\"hello\"}"),
            code: close::UNSUPPORTED_DATA,
            reason: "text_message",
        },
        Case {
            name: "oversized message",
            input: Input::Binary(vec![0; Limits::default().max_message_size + 1]),
            code: close::MESSAGE_TOO_BIG,
            reason: "too_big",
        },
        Case {
            name: "sequence gap",
            input: Input::Binary(skipping.next_frame(true, 10)),
            code: close::SEQUENCE_GAP,
            reason: "sequence_gap",
        },
    ]
}

async fn send(ws: &mut Ws, input: Input) {
    match input {
        Input::Binary(data) => ws.send_binary(data).await,
        Input::Text(text) => ws.send_text(text).await,
    }
}

async fn metric(relay: &TestRelay, series: &str) -> f64 {
    metric_value(&relay.metrics().await, series)
}

#[tokio::test]
async fn bad_input_gets_close_code_and_metric() {
    let relay = start_relay(Limits::default()).await;
    let (session, key) = relay.create_session().await;
    let (other, _) = relay.create_session().await;

    for case in cases(&key, &session, &other) {
        let rejected = format!(
            "sealcast_frames_rejected_total{{reason=\"{}\"}}",
            case.reason
        );
        let closes = format!(
            "sealcast_websocket_closes_total{{role=\"publisher\",code=\"{}\"}}",
            case.code
        );
        let rejected_before = metric(&relay, &rejected).await;
        let closes_before = metric(&relay, &closes).await;

        let mut publisher = relay.publish(&session).await;
        send(&mut publisher, case.input).await;
        let (code, reason) = publisher.expect_close().await;
        assert_eq!(
            code, case.code,
            "{}: wrong close code ({reason})",
            case.name
        );
        assert!(!reason.is_empty(), "{}: close without a reason", case.name);

        assert_eq!(
            metric(&relay, &rejected).await,
            rejected_before + 1.0,
            "{}",
            case.name
        );
        assert_eq!(
            metric(&relay, &closes).await,
            closes_before + 1.0,
            "{}",
            case.name
        );
    }

    // The relay still accepts good frames, and stored none of the bad ones.
    let mut publisher = relay.publish(&session).await;
    let mut stream = Publisher::new(&key, &session);
    publisher.send_binary(stream.next_frame(true, 10)).await;
    assert_eq!(
        acks_until(&mut publisher, stream.stream_id(), 0).await,
        vec![(0, 0)]
    );
    relay.handle.shutdown().await;
}

#[tokio::test]
async fn follower_sending_data_is_closed() {
    let relay = start_relay(Limits::default()).await;
    let (session, _) = relay.create_session().await;
    let closes = "sealcast_websocket_closes_total{role=\"follower\",code=\"1008\"}";
    let before = metric(&relay, closes).await;

    let mut follower = relay.follow(&session, "").await;
    assert!(matches!(
        follower.next_follow_item().await,
        FollowItem::Event(FollowerEvent::Welcome { .. })
    ));
    follower.send_binary(vec![1, 2, 3]).await;
    assert_eq!(follower.expect_close().await.0, close::POLICY_VIOLATION);
    assert_eq!(metric(&relay, closes).await, before + 1.0);
    relay.handle.shutdown().await;
}
