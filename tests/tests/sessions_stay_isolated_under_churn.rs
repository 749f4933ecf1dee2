//! Followers of many concurrent sessions receive only their own session's
//! frames. Sessions start and end at random times, followers join at
//! random points of the stream (and so catch up from the store) and some
//! leave early. Every follower must open every frame it receives, report no
//! rejected frame and no gap, and receive its own session's transcript: all
//! of it when it stays to the end, a prefix of it when it leaves early.
//!
//! The run is bounded: 40 sessions, at most 12 at once, 5 to 30 segments each.
//! The random plan is printed with its seed; set `SEALCAST_CHURN_SEED` to
//! repeat a run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sealcast_client::auth::Authorizer;
use sealcast_protocol::TranscriptSegment;
use sealcast_tests::process::RelayProcess;
use sealcast_tests::session::{
    follow_counting_finals, wait_until_connected, FollowOutcome, LiveSession,
};
use sealcast_tests::staff::StaffDevice;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use url::Url;

/// Sessions created over the whole run.
const SESSIONS: usize = 40;

/// Sessions streaming at the same time, at most.
const CONCURRENT_SESSIONS: usize = 12;

/// Maximum time for the whole run.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// Maximum time a staying follower may take to see its session end.
const FOLLOW_LIMIT: Duration = Duration::from_secs(60);

/// One session's random plan.
#[derive(Debug, Clone)]
struct SessionPlan {
    index: usize,
    segments: usize,
    /// Pause after each segment, in milliseconds.
    max_pause_ms: u64,
    followers: Vec<FollowerPlan>,
}

/// When a follower joins and whether it leaves before the end.
#[derive(Debug, Clone, Copy)]
struct FollowerPlan {
    /// Segments published before the follower connects.
    joins_after: usize,
    /// Time after which the follower disconnects, or `None` to stay to the end.
    leaves_after: Option<Duration>,
}

impl SessionPlan {
    fn random(rng: &mut StdRng, index: usize) -> Self {
        let segments = rng.gen_range(5..=30);
        let follower_count = rng.gen_range(1..=3);
        let mut followers: Vec<FollowerPlan> = (0..follower_count)
            .map(|number| FollowerPlan {
                // The first follower joins at the start, so every session has
                // one that sees each frame live.
                joins_after: if number == 0 {
                    0
                } else {
                    rng.gen_range(0..segments)
                },
                leaves_after: (number > 0 && rng.gen_bool(0.4))
                    .then(|| Duration::from_millis(rng.gen_range(50..400))),
            })
            .collect();
        followers.sort_by_key(|follower| follower.joins_after);
        SessionPlan {
            index,
            segments,
            max_pause_ms: rng.gen_range(0..=25),
            followers,
        }
    }
}

/// Where the sessions are created.
#[derive(Clone)]
struct RelayTarget {
    url: Url,
    ca_cert: PathBuf,
    auth: Arc<dyn Authorizer>,
}

/// What one session published and what each of its followers received.
struct SessionResult {
    plan: SessionPlan,
    marker: String,
    published: Vec<TranscriptSegment>,
    outcomes: Vec<(FollowerPlan, FollowOutcome)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_receive_only_their_own_session() {
    let seed = std::env::var("SEALCAST_CHURN_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("session churn seed {seed}: set SEALCAST_CHURN_SEED={seed} to repeat this run");
    let mut rng = StdRng::seed_from_u64(seed);

    let data = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(data.path(), "127.0.0.1:0", &[]);
    let staff = StaffDevice::clinician(&relay).await;
    let target = RelayTarget {
        url: Url::parse(&relay.base_url()).unwrap(),
        ca_cert: relay.ca_cert(),
        auth: staff.authorizer(),
    };

    let slots = Arc::new(Semaphore::new(CONCURRENT_SESSIONS));
    let mut tasks = JoinSet::new();
    for index in 0..SESSIONS {
        let plan = SessionPlan::random(&mut rng, index);
        let start_delay = Duration::from_millis(rng.gen_range(0..2000));
        let (target, slots) = (target.clone(), Arc::clone(&slots));
        tasks.spawn(async move {
            tokio::time::sleep(start_delay).await;
            let _slot = slots.acquire_owned().await.unwrap();
            run_session(&target, plan, seed).await
        });
    }

    let mut results = Vec::with_capacity(SESSIONS);
    let collecting = async {
        while let Some(result) = tasks.join_next().await {
            results.push(result.expect("a session task panicked"));
        }
    };
    tokio::time::timeout(RUN_LIMIT, collecting)
        .await
        .unwrap_or_else(|_| {
            panic!("seed {seed}: the sessions did not finish within {RUN_LIMIT:?}")
        });

    assert_eq!(results.len(), SESSIONS, "seed {seed}: sessions finished");
    for result in &results {
        check_session(result, seed);
    }
}

/// Creates a session, publishes its segments while followers join and
/// leave as planned, ends it and collects what every follower received.
async fn run_session(target: &RelayTarget, plan: SessionPlan, seed: u64) -> SessionResult {
    let session = LiveSession::create_at(&target.url, &target.ca_cert, target.auth.clone()).await;
    let marker = format!("session {}", session.created.session_id);
    let mut rng = StdRng::seed_from_u64(seed ^ plan.index as u64);
    let mut publisher = session.publisher().await;
    let mut following = Vec::new();
    let mut published = Vec::with_capacity(plan.segments);

    for number in 0..plan.segments {
        for follower_plan in plan.followers.iter().filter(|f| f.joins_after == number) {
            following.push((
                *follower_plan,
                start_follower(&session, *follower_plan).await,
            ));
        }
        let segment = TranscriptSegment {
            segment_id: number as u64,
            revision: 0,
            speaker: if number % 2 == 0 { "doctor" } else { "patient" }.into(),
            start_ms: number as u64 * 1000,
            end_ms: number as u64 * 1000 + 900,
            text: format!("{marker}, segment {number}"),
            is_final: true,
        };
        publisher.publish(&segment).await.unwrap();
        published.push(segment);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..=plan.max_pause_ms))).await;
    }
    publisher.end().await.unwrap();
    session.end().await;

    let mut outcomes = Vec::with_capacity(following.len());
    for (follower_plan, task) in following {
        outcomes.push((follower_plan, task.await.expect("a follower task panicked")));
    }
    SessionResult {
        plan,
        marker,
        published,
        outcomes,
    }
}

/// Connects a follower and collects its events on a task, until the
/// session ends or the follower's planned time to leave.
async fn start_follower(
    session: &LiveSession,
    plan: FollowerPlan,
) -> tokio::task::JoinHandle<FollowOutcome> {
    let mut follower = session.follower();
    wait_until_connected(&mut follower, FOLLOW_LIMIT).await;
    let limit = plan.leaves_after.unwrap_or(FOLLOW_LIMIT);
    tokio::spawn(follow_counting_finals(
        follower,
        limit,
        Arc::new(AtomicUsize::new(0)),
    ))
}

fn check_session(result: &SessionResult, seed: u64) {
    let context = format!("seed {seed}, {:?}", result.plan);
    for (plan, outcome) in &result.outcomes {
        assert!(
            outcome.rejected.is_empty(),
            "{context}: follower {plan:?} rejected frames {:?}",
            outcome.rejected
        );
        assert_eq!(
            outcome.gaps, 0,
            "{context}: follower {plan:?} reported gaps"
        );

        let received: Vec<&TranscriptSegment> = outcome
            .finals
            .iter()
            .map(|(_, _, segment)| segment)
            .collect();
        if let Some(foreign) = received
            .iter()
            .find(|segment| !segment.text.starts_with(&result.marker))
        {
            panic!(
                "{context}: a follower of {} received {:?}",
                result.marker, foreign.text
            );
        }

        let expected: Vec<&TranscriptSegment> = match plan.leaves_after {
            None => result.published.iter().collect(),
            Some(_) => result.published.iter().take(received.len()).collect(),
        };
        assert!(
            received == expected,
            "{context}: follower {plan:?} received {} segments that are not the published {}",
            received.len(),
            expected.len()
        );
        if plan.leaves_after.is_none() {
            assert!(
                outcome.ended,
                "{context}: follower {plan:?} did not see the end"
            );
            assert_eq!(
                outcome.disconnects, 0,
                "{context}: follower {plan:?} lost its connection"
            );
        }
    }
}
