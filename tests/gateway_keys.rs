//! Gateway keys end to end: a real gateway in `gateway_keys` mode, the fake
//! SmartLead (which records every request with its arrival time and key, and
//! can enforce SmartLead's rate limit), real SQLite files and keys made with
//! `identity::keys` on the gateway's own database while it runs. What
//! matters is what a caller gets back and what SmartLead saw: the account's
//! key, never the gateway key.

mod common;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use common::*;
use fake_smartlead::{FakeConfig, FakeHandle, Fault, FaultRule, RateLimit};
use http::Request;
use http_body_util::Full;
use safedelete::config::Rate;
use safedelete::identity::keys::{self, NewKey};
use serde_json::{json, Value};

/// The second account's SmartLead key; `+` and `/` make its query spelling
/// differ from the key itself.
const CLIENT_A_KEY: &str = "sl_client+a/key";

/// A fake SmartLead and a gateway in `gateway_keys` mode in front of it.
struct Setup {
    up: FakeHandle,
    gw: Gateway,
    /// Holds the account key files.
    _keys: tempfile::TempDir,
}

/// `accounts`: (name, SmartLead key); `smartlead`: keys of `[smartlead]`;
/// `more`: extra tables (policy, identity.rate_limit...).
async fn setup(fake: FakeConfig, accounts: &[(&str, &str)], smartlead: &str, more: &str) -> Setup {
    setup_with(fake, accounts, "", smartlead, more).await
}

/// [`setup`], with more keys of `[identity]`.
async fn setup_with(
    fake: FakeConfig,
    accounts: &[(&str, &str)],
    identity: &str,
    smartlead: &str,
    more: &str,
) -> Setup {
    let up = fake_smartlead::start(fake).await.unwrap();
    let keys = tempfile::tempdir().unwrap();
    let tables = tables(keys.path(), accounts, identity, smartlead, more);
    let gw = Gateway::start_with(
        &up.url(),
        Extra {
            tables: &tables,
            ..Extra::default()
        },
    )
    .await;
    Setup {
        up,
        gw,
        _keys: keys,
    }
}

/// The config tables for gateway keys, writing each account's key to a file in `dir`.
fn tables(
    dir: &Path,
    accounts: &[(&str, &str)],
    identity: &str,
    smartlead: &str,
    more: &str,
) -> String {
    let mut t = format!(
        "[identity]\nmode = \"gateway_keys\"\n{identity}\n[bypass]\ninterval = \"0s\"\n\n[smartlead]\n{smartlead}\n"
    );
    for (name, key) in accounts {
        let file = dir.join(format!("{name}.key"));
        std::fs::write(&file, format!("{key}\n")).unwrap();
        t.push_str(&format!(
            "[[smartlead.accounts]]\nname = \"{name}\"\napi_key_file = {:?}\n\n",
            file.display().to_string()
        ));
    }
    t.push_str(more);
    t
}

const DEFAULT_ACCOUNT: &[(&str, &str)] = &[("default", KEY)];

/// A key for `name` on `account`, made on the gateway's database.
async fn make_key(
    gw: &Gateway,
    name: &str,
    account: &str,
    expires_at: Option<SystemTime>,
    rate: Option<&str>,
) -> String {
    let pool = safedelete::db::open(&gw.store).await.unwrap();
    let created = keys::create(
        &pool,
        NewKey {
            name,
            account,
            expires_at,
            rate_limit: rate.map(|r| Rate::parse("rate_limit", r).unwrap()),
            by: "test",
        },
    )
    .await
    .unwrap();
    pool.close().await;
    created.key.expose().to_string()
}

/// Waits (without a request) until the gateway counts `n` usable keys.
async fn wait_for_keys(gw: &Gateway, n: f64) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if metric(gw, "safedelete_gateway_keys").await == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the gateway did not see {n} keys within 5 s");
}

async fn get_target(gw: &Gateway, target: &str) -> Reply {
    get(&gw.url(target)).await
}

async fn post_json(gw: &Gateway, target: &str, body: &str) -> Reply {
    send(
        Request::post(gw.url(target))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap(),
    )
    .await
}

async fn delete(gw: &Gateway, target: &str) -> Reply {
    send(
        Request::delete(gw.url(target))
            .body(Full::default())
            .unwrap(),
    )
    .await
}

/// The gateway key, and its random part, are nowhere in what SmartLead got.
fn assert_gateway_key_never_sent(up: &FakeHandle, key: &str) {
    let random = key.strip_prefix("sdg_").unwrap();
    for r in up.requests() {
        for needle in [key, random] {
            assert!(!r.target.contains(needle), "in the target: {}", r.target);
            assert!(
                !common::process::contains(&r.body, needle.as_bytes()),
                "in the body of {}",
                r.target
            );
            for (name, value) in &r.headers {
                assert!(
                    !common::process::contains(value, needle.as_bytes()),
                    "in header {name}"
                );
            }
        }
    }
}

/// `(actor_label, account, status)` of every audit row, once there are `n`.
async fn audit_actors(gw: &Gateway, n: usize) -> Vec<(Option<String>, Option<String>, i64)> {
    gw.wait_for_audit_rows(n as i64).await;
    let pool = safedelete::db::open_existing(&gw.store).await.unwrap();
    let rows = sqlx::query_as::<_, (Option<String>, Option<String>, i64)>(
        "SELECT actor_label, account, status FROM audit_events ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    rows
}

fn message(reply: &Reply) -> String {
    reply.json()["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no message: {}", String::from_utf8_lossy(&reply.body)))
        .to_owned()
}

#[tokio::test]
async fn a_gateway_key_in_the_query_reaches_smartlead_as_the_account_key() {
    let s = setup(FakeConfig::default(), DEFAULT_ACCOUNT, "", "").await;
    let key = make_key(&s.gw, "alice", "default", None, None).await;
    wait_for_keys(&s.gw, 1.0).await;

    let reply = get_target(
        &s.gw,
        &format!("/api/v1/campaigns/101?include_tags=true&api_key={key}&x=1"),
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.json()["id"], 101);

    let seen = s.up.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].target,
        "/api/v1/campaigns/101?include_tags=true&api_key=sl_test_key&x=1"
    );
    assert_eq!(seen[0].api_key.as_deref(), Some(KEY));
    assert_gateway_key_never_sent(&s.up, &key);

    let rows = audit_actors(&s.gw, 1).await;
    assert_eq!(
        rows,
        vec![(Some("alice".into()), Some("default".into()), 200)]
    );
}

#[tokio::test]
async fn a_gateway_key_in_a_json_body_reaches_smartlead_as_the_account_key() {
    let s = setup(FakeConfig::default(), DEFAULT_ACCOUNT, "", "").await;
    let key = make_key(&s.gw, "alice", "default", None, None).await;
    wait_for_keys(&s.gw, 1.0).await;

    let created = post_json(
        &s.gw,
        "/api/v1/campaigns/create",
        &format!(r#"{{"api_key":"{key}","name":"Made through the gateway"}}"#),
    )
    .await;
    assert_eq!(created.status, 200, "{:?}", created.body);
    let id = created.json()["id"].as_u64().unwrap();
    assert_eq!(
        s.up.campaign(id).unwrap()["name"],
        "Made through the gateway"
    );

    let added = post_json(
        &s.gw,
        "/api/v1/campaigns/101/leads",
        &format!(r#"{{"lead_list":[{{"email":"new.lead@example.org"}}],"api_key":"{key}"}}"#),
    )
    .await;
    assert_eq!(added.status, 200, "{:?}", added.body);
    assert_eq!(added.json()["upload_count"], 1);

    let seen = s.up.requests();
    assert_eq!(seen.len(), 2);
    for r in &seen {
        assert_eq!(r.query(), None, "{}", r.target);
        assert_eq!(r.api_key.as_deref(), Some(KEY), "{}", r.target);
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["api_key"], KEY);
        let length = std::str::from_utf8(r.header("content-length").unwrap()).unwrap();
        assert_eq!(length.parse::<usize>().unwrap(), r.body.len());
        assert!(r.body_complete);
    }
    assert_gateway_key_never_sent(&s.up, &key);
}

#[tokio::test]
async fn a_guarded_delete_with_a_gateway_key_reads_and_acts_with_the_account_key_and_names_the_key()
{
    let policy = "[policy]\ndefault = \"allow\"\n\n[[policy.rules]]\nname = \"not-alice\"\naction = \"deny\"\nactors = [\"alice\"]\n";
    let s = setup(FakeConfig::default(), DEFAULT_ACCOUNT, "", policy).await;
    let alice = make_key(&s.gw, "alice", "default", None, None).await;
    let bob = make_key(&s.gw, "bob", "default", None, None).await;
    wait_for_keys(&s.gw, 2.0).await;

    let denied = delete(&s.gw, &format!("/api/v1/campaigns/101?api_key={alice}")).await;
    assert_eq!(denied.status, 403, "{:?}", denied.body);
    assert_eq!(denied.header("x-safedelete-action"), Some("denied"));
    assert!(String::from_utf8_lossy(&denied.body).contains("not-alice"));
    assert!(s.up.campaign(101).is_some());
    assert!(s.up.requests().iter().all(|r| r.method != "DELETE"));

    let allowed = delete(&s.gw, &format!("/api/v1/campaigns/101?api_key={bob}")).await;
    assert_eq!(allowed.status, 200, "{:?}", allowed.body);
    assert_eq!(allowed.header("x-safedelete-action"), Some("allowed"));
    assert!(allowed.header("x-safedelete-snapshot-id").is_some());
    assert!(s.up.campaign(101).is_none());

    // The guard's own reads (facts, capture) and the delete all went out
    // with the account's key; the reads came first.
    let seen = s.up.requests();
    let delete_at = seen.iter().position(|r| r.method == "DELETE").unwrap();
    for path in [
        "/api/v1/campaigns/101",
        "/api/v1/campaigns/101/leads-export",
    ] {
        let read = seen
            .iter()
            .position(|r| r.method == "GET" && r.path() == path)
            .unwrap_or_else(|| panic!("no read of {path}"));
        assert!(read < delete_at, "{path} read after the delete");
    }
    for r in &seen {
        assert_eq!(r.api_key.as_deref(), Some(KEY), "{} {}", r.method, r.target);
    }
    assert_gateway_key_never_sent(&s.up, &alice);
    assert_gateway_key_never_sent(&s.up, &bob);

    let rows = audit_actors(&s.gw, 2).await;
    assert_eq!(
        rows,
        vec![
            (Some("alice".into()), Some("default".into()), 403),
            (Some("bob".into()), Some("default".into()), 200),
        ]
    );
}

#[tokio::test]
async fn every_refused_key_gets_a_401_that_says_what_to_do_and_nothing_reaches_smartlead() {
    let s = setup(FakeConfig::default(), DEFAULT_ACCOUNT, "", "").await;
    // Written in this order, so that two usable keys means every write was read.
    let revoked = make_key(&s.gw, "dave", "default", None, None).await;
    let pool = safedelete::db::open(&s.gw.store).await.unwrap();
    assert_eq!(keys::revoke(&pool, "dave", "test").await.unwrap(), 1);
    pool.close().await;
    let past = SystemTime::now() - Duration::from_secs(60);
    let expired = make_key(&s.gw, "erin", "default", Some(past), None).await;
    let carol = make_key(&s.gw, "carol", "default", None, None).await;
    let frank = make_key(&s.gw, "frank", "default", None, None).await;
    wait_for_keys(&s.gw, 2.0).await;
    let unknown = format!("sdg_{}", "A".repeat(43));

    let cases: Vec<(&str, Reply, &str, &str)> = vec![
        (
            "no key",
            get_target(&s.gw, "/api/v1/campaigns").await,
            "needs a gateway key",
            "no_key",
        ),
        (
            "a SmartLead key",
            get_target(&s.gw, &format!("/api/v1/campaigns?api_key={KEY}")).await,
            "not SmartLead keys",
            "smartlead_key",
        ),
        (
            "an unknown key",
            get_target(&s.gw, &format!("/api/v1/campaigns?api_key={unknown}")).await,
            "unknown gateway key",
            "unknown_key",
        ),
        (
            "a revoked key",
            get_target(&s.gw, &format!("/api/v1/campaigns?api_key={revoked}")).await,
            "\"dave\" was revoked",
            "revoked",
        ),
        (
            "an expired key",
            get_target(&s.gw, &format!("/api/v1/campaigns?api_key={expired}")).await,
            "\"erin\" expired",
            "expired",
        ),
        (
            "two different keys",
            post_json(
                &s.gw,
                &format!("/api/v1/campaigns/create?api_key={carol}"),
                &format!(r#"{{"api_key":"{frank}","name":"x"}}"#),
            )
            .await,
            "more than one key",
            "mixed_keys",
        ),
        (
            "a SmartLead key in the body",
            post_json(
                &s.gw,
                "/api/v1/campaigns/create",
                &format!(r#"{{"api_key":"{KEY}","name":"x"}}"#),
            )
            .await,
            "not SmartLead keys",
            "smartlead_key",
        ),
    ];
    for (label, reply, says, _) in &cases {
        assert_eq!(reply.status, 401, "{label}: {:?}", reply.body);
        let message = message(reply);
        assert!(message.contains(says), "{label}: {message}");
        assert!(
            message.contains("gateway key"),
            "{label}: says nothing of what to send: {message}"
        );
        for secret in [KEY, revoked.as_str(), carol.as_str(), frank.as_str()] {
            assert!(
                !String::from_utf8_lossy(&reply.body).contains(secret),
                "{label}: the answer repeats a key"
            );
        }
    }
    assert!(
        s.up.requests().is_empty(),
        "reached SmartLead: {:?}",
        s.up.requests()
    );
    let smartlead_key = metric(
        &s.gw,
        "safedelete_unauthorized_total{reason=\"smartlead_key\"}",
    )
    .await;
    assert_eq!(smartlead_key, 2.0);
    for reason in ["no_key", "unknown_key", "revoked", "expired", "mixed_keys"] {
        let n = metric(
            &s.gw,
            &format!("safedelete_unauthorized_total{{reason=\"{reason}\"}}"),
        )
        .await;
        assert_eq!(n, 1.0, "{reason}");
    }
}

/// Sends `target` every 100 ms until the answer is not 200; returns it and
/// how long that took, or panics after `within`.
async fn poll_until_refused(gw: &Gateway, target: &str, within: Duration) -> (Reply, Duration) {
    let start = Instant::now();
    loop {
        let reply = get_target(gw, target).await;
        if reply.status != 200 {
            return (reply, start.elapsed());
        }
        assert!(
            start.elapsed() < within,
            "still accepted {:?} later",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_revoke_on_the_database_stops_the_key_on_the_running_gateway_within_a_second() {
    let s = setup(FakeConfig::default(), DEFAULT_ACCOUNT, "", "").await;
    let key = make_key(&s.gw, "gina", "default", None, None).await;
    wait_for_keys(&s.gw, 1.0).await;
    let target = format!("/api/v1/campaigns/102?api_key={key}");
    assert_eq!(get_target(&s.gw, &target).await.status, 200);

    let pool = safedelete::db::open(&s.gw.store).await.unwrap();
    keys::revoke(&pool, "gina", "test").await.unwrap();
    pool.close().await;
    let (reply, after) = poll_until_refused(&s.gw, &target, Duration::from_millis(1500)).await;
    assert_eq!(reply.status, 401);
    assert!(message(&reply).contains("\"gina\" was revoked"));
    assert!(after <= Duration::from_millis(1500), "{after:?}");
}

#[tokio::test]
async fn a_key_stops_working_when_it_expires() {
    let s = setup(FakeConfig::default(), DEFAULT_ACCOUNT, "", "").await;
    let expires = SystemTime::now() + Duration::from_secs(3);
    let key = make_key(&s.gw, "hank", "default", Some(expires), None).await;
    wait_for_keys(&s.gw, 1.0).await;
    let target = format!("/api/v1/campaigns/102?api_key={key}");
    assert_eq!(get_target(&s.gw, &target).await.status, 200);

    let (reply, _) = poll_until_refused(&s.gw, &target, Duration::from_secs(5)).await;
    let now = SystemTime::now();
    assert_eq!(reply.status, 401);
    assert!(message(&reply).contains("\"hank\" expired"));
    // Not before it expired, and within a second after.
    assert!(
        now + Duration::from_millis(50) >= expires,
        "refused early: {:?} before",
        expires.duration_since(now)
    );
    let late = now.duration_since(expires).unwrap_or_default();
    assert!(late <= Duration::from_secs(1), "refused {late:?} late");
}

#[tokio::test]
async fn after_a_rotation_both_keys_work_until_the_grace_ends_then_only_the_new_one() {
    let s = setup(FakeConfig::default(), DEFAULT_ACCOUNT, "", "").await;
    let old = make_key(&s.gw, "ivan", "default", None, None).await;
    wait_for_keys(&s.gw, 1.0).await;
    let pool = safedelete::db::open(&s.gw.store).await.unwrap();
    let rotated_at = Instant::now();
    let new = keys::rotate(&pool, "ivan", Duration::from_secs(3), "test")
        .await
        .unwrap()
        .new
        .key
        .expose()
        .to_string();
    pool.close().await;
    wait_for_keys(&s.gw, 2.0).await;

    let old_target = format!("/api/v1/campaigns/102?api_key={old}");
    let new_target = format!("/api/v1/campaigns/102?api_key={new}");
    assert!(
        rotated_at.elapsed() < Duration::from_secs(2),
        "too slow to test the grace"
    );
    assert_eq!(get_target(&s.gw, &old_target).await.status, 200);
    assert_eq!(get_target(&s.gw, &new_target).await.status, 200);

    let (reply, _) = poll_until_refused(&s.gw, &old_target, Duration::from_secs(6)).await;
    assert_eq!(reply.status, 401);
    assert!(message(&reply).contains("\"ivan\" expired"));
    assert!(rotated_at.elapsed() >= Duration::from_millis(2900));
    assert_eq!(get_target(&s.gw, &new_target).await.status, 200);
    let rows = audit_actors(&s.gw, 4).await;
    assert!(rows
        .iter()
        .all(|(actor, _, _)| actor.as_deref() == Some("ivan")));
}

#[tokio::test]
async fn each_account_reaches_smartlead_with_its_own_key() {
    let fake = FakeConfig {
        extra_api_keys: vec![CLIENT_A_KEY.into()],
        ..FakeConfig::default()
    };
    let s = setup(
        fake,
        &[("default", KEY), ("client-a", CLIENT_A_KEY)],
        "",
        "",
    )
    .await;
    let jo = make_key(&s.gw, "jo", "default", None, None).await;
    let kim = make_key(&s.gw, "kim", "client-a", None, None).await;
    wait_for_keys(&s.gw, 2.0).await;

    assert_eq!(
        get_target(&s.gw, &format!("/api/v1/campaigns?api_key={jo}"))
            .await
            .status,
        200
    );
    let reply = get_target(&s.gw, &format!("/api/v1/campaigns/101?api_key={kim}")).await;
    assert_eq!(reply.status, 200);
    // SmartLead echoing nothing, the masked answer is the real one.
    assert_eq!(reply.json()["id"], 101);
    let created = post_json(
        &s.gw,
        "/api/v1/campaigns/create",
        &format!(r#"{{"api_key":"{kim}","name":"client A's"}}"#),
    )
    .await;
    assert_eq!(created.status, 200, "{:?}", created.body);

    let seen: Vec<Option<String>> = s.up.requests().into_iter().map(|r| r.api_key).collect();
    assert_eq!(
        seen,
        vec![
            Some(KEY.to_string()),
            Some(CLIENT_A_KEY.to_string()),
            Some(CLIENT_A_KEY.to_string())
        ]
    );
    // In the query, the key is percent-encoded; in the body, as written.
    let requests = s.up.requests();
    assert!(requests[1].target.ends_with("api_key=sl_client%2Ba%2Fkey"));
    assert!(common::process::contains(
        &requests[2].body,
        br#""api_key":"sl_client+a/key""#
    ));
    assert_gateway_key_never_sent(&s.up, &jo);
    assert_gateway_key_never_sent(&s.up, &kim);

    let rows = audit_actors(&s.gw, 3).await;
    assert_eq!(
        rows,
        vec![
            (Some("jo".into()), Some("default".into()), 200),
            (Some("kim".into()), Some("client-a".into()), 200),
            (Some("kim".into()), Some("client-a".into()), 200),
        ]
    );
}

/// Checks a 429 in the gateway's SmartLead shape; returns its `Retry-After`.
fn assert_gateway_429(reply: &Reply) -> u64 {
    assert_eq!(reply.status, 429, "{:?}", reply.body);
    let retry_after: u64 = reply
        .header("retry-after")
        .expect("a Retry-After")
        .parse()
        .expect("Retry-After in whole seconds");
    assert!(retry_after >= 1);
    let body = reply.json();
    assert_eq!(body["error"]["code"], "RATE_LIMIT_EXCEEDED", "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    retry_after
}

#[tokio::test]
async fn a_key_over_its_own_limit_gets_429_and_other_keys_do_not_notice() {
    let s = setup(FakeConfig::default(), DEFAULT_ACCOUNT, "", "").await;
    let lou = make_key(&s.gw, "lou", "default", None, Some("3/min")).await;
    let max = make_key(&s.gw, "max", "default", None, None).await;
    wait_for_keys(&s.gw, 2.0).await;

    let target = format!("/api/v1/campaigns/102?api_key={lou}");
    for i in 0..3 {
        assert_eq!(get_target(&s.gw, &target).await.status, 200, "request {i}");
    }
    let refused = get_target(&s.gw, &target).await;
    let retry_after = assert_gateway_429(&refused);
    assert!(retry_after <= 60, "{retry_after}");
    assert!(message(&refused).contains("lou"));
    assert_eq!(s.up.requests().len(), 3, "the 4th was forwarded");

    let other = get_target(&s.gw, &format!("/api/v1/campaigns/102?api_key={max}")).await;
    assert_eq!(other.status, 200);
    assert_eq!(s.up.requests().len(), 4);
    let n = metric(
        &s.gw,
        "safedelete_rate_limited_total{scope=\"key\",name=\"lou\"}",
    )
    .await;
    assert_eq!(n, 1.0);
}

#[tokio::test]
async fn the_default_key_limit_applies_to_keys_without_their_own() {
    let s = setup_with(
        FakeConfig::default(),
        DEFAULT_ACCOUNT,
        "rate_limit = \"2/min\"\n",
        "",
        "",
    )
    .await;
    let rita = make_key(&s.gw, "rita", "default", None, None).await;
    let sam = make_key(&s.gw, "sam", "default", None, Some("10/min")).await;
    wait_for_keys(&s.gw, 2.0).await;
    let target = format!("/api/v1/campaigns/102?api_key={rita}");
    assert_eq!(get_target(&s.gw, &target).await.status, 200);
    assert_eq!(get_target(&s.gw, &target).await.status, 200);
    assert_gateway_429(&get_target(&s.gw, &target).await);
    // A key's own limit wins over the default.
    let target = format!("/api/v1/campaigns/102?api_key={sam}");
    for i in 0..3 {
        assert_eq!(get_target(&s.gw, &target).await.status, 200, "request {i}");
    }
    assert_eq!(s.up.requests().len(), 5);
}

/// Sends `n` GETs at once with `key`; the replies in send order.
async fn burst(gw: &Gateway, key: &str, n: usize) -> Vec<Reply> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let url = gw.url(&format!("/api/v1/campaigns/102?api_key={key}&n={i}"));
        tasks.push(tokio::spawn(async move { get(&url).await }));
    }
    let mut replies = Vec::new();
    for t in tasks {
        replies.push(t.await.unwrap());
    }
    replies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_account_limit_holds_requests_so_smartlead_never_answers_429() {
    let limit = RateLimit {
        requests: 5,
        per: Duration::from_secs(1),
    };
    let fake = FakeConfig {
        rate_limit: Some(limit),
        ..FakeConfig::default()
    };
    let s = setup(fake, DEFAULT_ACCOUNT, "rate_limit = \"5/1s\"\n", "").await;
    let key = make_key(&s.gw, "nina", "default", None, None).await;
    wait_for_keys(&s.gw, 1.0).await;

    let started = Instant::now();
    let replies = burst(&s.gw, &key, 20).await;
    for (i, r) in replies.iter().enumerate() {
        assert_eq!(r.status, 200, "request {i}: {:?}", r.body);
    }
    // 20 at 5 a second: the last ones waited about three seconds.
    assert!(started.elapsed() >= Duration::from_millis(2900));
    assert_eq!(s.up.rate_limited(), 0, "SmartLead answered 429");
    let mut arrived: Vec<Instant> = s.up.requests().iter().map(|r| r.received_at).collect();
    assert_eq!(arrived.len(), 20);
    arrived.sort();
    for w in arrived.windows(6) {
        let span = w[5] - w[0];
        assert!(span >= Duration::from_secs(1), "6 requests within {span:?}");
    }
    assert!(metric(&s.gw, "safedelete_account_held_total{account=\"default\"}").await >= 10.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_wait_or_max_queue_the_account_limit_answers_429_itself() {
    let fake = FakeConfig {
        rate_limit: Some(RateLimit {
            requests: 5,
            per: Duration::from_secs(1),
        }),
        ..FakeConfig::default()
    };
    let s = setup(
        fake,
        DEFAULT_ACCOUNT,
        "rate_limit = \"5/1s\"\nmax_wait = \"1s\"\nmax_queue = 3\n",
        "",
    )
    .await;
    let key = make_key(&s.gw, "olga", "default", None, None).await;
    wait_for_keys(&s.gw, 1.0).await;

    let replies = burst(&s.gw, &key, 20).await;
    let ok = replies.iter().filter(|r| r.status == 200).count();
    let refused: Vec<&Reply> = replies.iter().filter(|r| r.status != 200).collect();
    assert!(ok >= 5, "{ok} succeeded");
    assert!(!refused.is_empty(), "nothing was refused");
    for r in &refused {
        assert_gateway_429(r);
        assert!(message(r).contains("account"), "{}", message(r));
    }
    assert_eq!(s.up.requests().len(), ok, "a refused request was forwarded");
    assert_eq!(s.up.rate_limited(), 0, "SmartLead answered 429");
    let n = metric(
        &s.gw,
        "safedelete_rate_limited_total{scope=\"account\",name=\"default\"}",
    )
    .await;
    assert_eq!(n as usize, refused.len());
}

#[tokio::test]
async fn a_smartlead_key_echoed_by_smartlead_reaches_the_caller_masked() {
    let fake = FakeConfig {
        extra_api_keys: vec![CLIENT_A_KEY.into()],
        ..FakeConfig::default()
    };
    let s = setup(
        fake,
        &[("default", KEY), ("client-a", CLIENT_A_KEY)],
        "",
        "",
    )
    .await;
    let paul = make_key(&s.gw, "paul", "default", None, None).await;
    let quinn = make_key(&s.gw, "quinn", "client-a", None, None).await;
    wait_for_keys(&s.gw, 2.0).await;
    s.up.fault(FaultRule {
        method: Some("GET".into()),
        path: "/api/v1/campaigns/101/analytics".into(),
        times: None,
        fault: Fault {
            status: Some(500),
            echo_request: true,
            headers: vec![
                ("x-echo-key".into(), KEY.into()),
                ("x-echo-key-a".into(), CLIENT_A_KEY.into()),
            ],
            ..Fault::default()
        },
    });

    for (key, secret, encoded) in [
        (&paul, KEY, KEY.to_string()),
        (&quinn, CLIENT_A_KEY, "sl_client%2Ba%2Fkey".to_string()),
    ] {
        let reply = get_target(
            &s.gw,
            &format!("/api/v1/campaigns/101/analytics?api_key={key}"),
        )
        .await;
        assert_eq!(reply.status, 500);
        let text = String::from_utf8_lossy(&reply.body).into_owned();
        assert!(!text.contains(secret), "{text}");
        assert!(!text.contains(&encoded), "{text}");
        // What SmartLead sent, with the key's spelling in the target starred
        // out at the same length: the caller can still read the error.
        let sent = format!(
            "GET /api/v1/campaigns/101/analytics?api_key={}",
            "*".repeat(encoded.len())
        );
        assert_eq!(reply.json()["request"], sent.as_str(), "{text}");
        assert_eq!(
            reply
                .header("content-length")
                .map(|l| l.parse::<usize>().unwrap()),
            Some(reply.body.len())
        );
        let upstream_len = json!({"error": "Internal server error", "request": format!(
            "GET /api/v1/campaigns/101/analytics?api_key={encoded}")})
        .to_string()
        .len();
        assert_eq!(reply.body.len(), upstream_len);
        // Headers too; only the caller's own account's key is known to be
        // masked, so each header is checked for the account it names.
        let header = if secret == KEY {
            "x-echo-key"
        } else {
            "x-echo-key-a"
        };
        assert_eq!(
            reply.header(header),
            Some("*".repeat(secret.len()).as_str())
        );
    }
}

#[tokio::test]
async fn passthrough_mode_still_forwards_a_smartlead_key_as_it_is() {
    let up = fake_smartlead::start(FakeConfig::default()).await.unwrap();
    let gw = Gateway::start(&up.url()).await;
    let reply = get_target(&gw, &format!("/api/v1/campaigns/101?api_key={KEY}")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["id"], 101);
    let seen = up.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].target,
        format!("/api/v1/campaigns/101?api_key={KEY}")
    );
    // Without `[identity]`, a gateway-looking key is not checked: SmartLead
    // refuses it.
    let sdg = format!("sdg_{}", "B".repeat(43));
    let refused = get_target(&gw, &format!("/api/v1/campaigns?api_key={sdg}")).await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.json(), json!({"message": "Invalid API Key"}));
    assert_eq!(up.requests().len(), 2);
}

/// The real binary with debug logs: neither the gateway key nor the
/// SmartLead key (in any spelling) is written to its logs, its database or
/// the WAL, whichever way the key came and whatever the request did.
#[tokio::test]
async fn no_key_is_written_to_logs_database_or_wal() {
    use common::process::{contains, write_config, Proc};
    const SECRET: &str = "sl_LEAK+gk/7f3a9c2e";
    let up = fake_smartlead::start(FakeConfig {
        api_key: SECRET.into(),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tables = tables(
        dir.path(),
        &[("default", SECRET)],
        "",
        "",
        "[policy]\ndefault = \"allow\"\n",
    );
    let (config, db) = write_config(
        dir.path(),
        &up.url(),
        Extra {
            tables: &tables,
            ..Extra::default()
        },
    );
    let mut gw = Proc::start(&config, "debug");
    let pool = safedelete::db::open(&db).await.unwrap();
    let key = keys::create(
        &pool,
        NewKey {
            name: "leakcheck",
            account: "default",
            expires_at: None,
            rate_limit: None,
            by: "test",
        },
    )
    .await
    .unwrap()
    .key
    .expose()
    .to_string();
    pool.close().await;
    let url = |t: &str| gw.url(t);
    // The key is read within 400 ms; wait for it without a metric (the
    // admin listener is the binary's).
    let mut ready = false;
    for _ in 0..50 {
        let r = get(&url(&format!("/api/v1/campaigns?api_key={key}"))).await;
        if r.status == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "the key was never accepted");
    let r = get(&url(&format!(
        "/api/v1/campaigns/101?include_tags=true&api_key={key}"
    )))
    .await;
    assert_eq!(r.status, 200);
    let r = send(
        Request::post(url("/api/v1/campaigns/create"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(format!(
                r#"{{"name":"leak check","api_key":"{key}"}}"#
            ))))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = send(
        Request::delete(url(&format!("/api/v1/campaigns/103?api_key={key}")))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(
        r.header("x-safedelete-action"),
        Some("allowed"),
        "{:?}",
        r.body
    );
    // Refused ones: the SmartLead key itself sent by mistake, a mangled
    // gateway key, and SmartLead echoing its key in an error.
    let r = get(&url(&format!(
        "/api/v1/campaigns?api_key={}",
        SECRET.replace('+', "%2B").replace('/', "%2F")
    )))
    .await;
    assert_eq!(r.status, 401);
    let r = get(&url(&format!("/api/v1/campaigns?api_key={key}x"))).await;
    assert_eq!(r.status, 401);
    up.fault(FaultRule {
        method: None,
        path: "/api/v1/campaigns/102".into(),
        times: None,
        fault: Fault {
            status: Some(500),
            echo_request: true,
            ..Fault::default()
        },
    });
    let r = get(&url(&format!("/api/v1/campaigns/102?api_key={key}"))).await;
    assert_eq!(r.status, 500);
    // SmartLead did get its key, in the query and in the body.
    let requests = up.requests();
    assert!(requests
        .iter()
        .any(|r| r.api_key.as_deref() == Some(SECRET)));
    assert!(requests
        .iter()
        .all(|r| r.api_key.as_deref() == Some(SECRET)));

    let mut wal = Vec::new();
    for _ in 0..100 {
        if audit_rows(&db).await.len() >= 8 {
            wal = std::fs::read(format!("{}-wal", db.display())).unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!wal.is_empty(), "no WAL to inspect");
    assert!(gw.terminate().success());
    let logs = gw.logs();
    assert!(logs.contains("\"level\":\"DEBUG\""), "not at debug level");

    let random = key.strip_prefix("sdg_").unwrap().to_string();
    let encoded: String =
        percent_encoding::utf8_percent_encode(SECRET, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    let query_spelling = SECRET.replace('+', "%2B").replace('/', "%2F");
    let needles = [
        SECRET.to_string(),
        encoded,
        query_spelling,
        key.clone(),
        random,
    ];
    let mut files = vec![("WAL (while running)".to_string(), wal)];
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let path = format!("{}{suffix}", db.display());
        if let Ok(bytes) = std::fs::read(&path) {
            files.push((path, bytes));
        }
    }
    assert!(files.len() >= 2, "no database file was written");
    for needle in &needles {
        assert!(
            !logs.contains(needle.as_str()),
            "{needle} is in the logs:\n{logs}"
        );
        for (name, bytes) in &files {
            assert!(!contains(bytes, needle.as_bytes()), "{needle} is in {name}");
        }
    }
}

/// `smartlead-cli` 0.1.4 (PyPI), a third-party client whose base URL can be
/// changed, lists and reads campaigns through the gateway with a gateway
/// key in place of the SmartLead key. Runs when `SAFEDELETE_TEST_SMARTLEAD_CLI`
/// names its `smartlead` executable:
///
/// ```sh
/// python3 -m venv /tmp/slcli && /tmp/slcli/bin/pip install smartlead-cli==0.1.4
/// SAFEDELETE_TEST_SMARTLEAD_CLI=/tmp/slcli/bin/smartlead cargo test --test gateway_keys smartlead_cli
/// ```
#[tokio::test]
async fn smartlead_cli_works_through_the_gateway_with_a_gateway_key() {
    let Some(cli) = std::env::var_os("SAFEDELETE_TEST_SMARTLEAD_CLI") else {
        println!(
            "skipped: set SAFEDELETE_TEST_SMARTLEAD_CLI to the `smartlead` executable of \
             smartlead-cli 0.1.4 (pip install smartlead-cli==0.1.4) to run this test"
        );
        return;
    };
    let s = setup(FakeConfig::default(), DEFAULT_ACCOUNT, "", "").await;
    let key = make_key(&s.gw, "python-cli", "default", None, None).await;
    wait_for_keys(&s.gw, 1.0).await;
    let home = tempfile::tempdir().unwrap();
    let base = s.gw.url("/api/v1");
    let run = |args: &'static [&'static str], api_key: String| {
        let (cli, base, home) = (cli.clone(), base.clone(), home.path().to_path_buf());
        // Blocking, off the runtime the gateway runs on.
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(cli)
                .args(args)
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("HOME", home)
                .env("SMARTLEAD_BASE_URL", base)
                .env("SMARTLEAD_API_KEY", api_key)
                .output()
                .expect("smartlead-cli runs")
        })
    };
    let list = run(&["campaigns", "list"], key.clone()).await.unwrap();
    let out = common::process::stdout(&list);
    let campaigns: Value = serde_json::from_str(&out).unwrap();
    let ids: Vec<u64> = campaigns
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![103, 102, 101]);
    let read = run(&["campaigns", "get", "101"], key.clone())
        .await
        .unwrap();
    let campaign: Value = serde_json::from_str(&common::process::stdout(&read)).unwrap();
    assert_eq!(campaign["name"], "Cold Outreach Q1");
    // With the SmartLead key it used to hold, it is told what to do instead.
    let refused = run(&["campaigns", "get", "101"], KEY.to_string())
        .await
        .unwrap();
    assert!(!refused.status.success());
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&refused.stdout),
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(said.contains("gateway keys (sdg_...)"), "{said}");

    let seen = s.up.requests();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for r in &seen {
        assert_eq!(r.api_key.as_deref(), Some(KEY));
        let agent = String::from_utf8_lossy(r.header("user-agent").unwrap_or_default());
        assert!(agent.starts_with("python-httpx/"), "{agent}");
    }
    assert_gateway_key_never_sent(&s.up, &key);
}
