//! Simulator semantics: expiry and resume, finished inquiries, idempotency, pagination, auth,
//! rate limits, one-time links, template version pinning, faults and signed webhooks.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use inquiry_mailer::clock::{Clock, parse_ts};
use inquiry_mailer::domain::InquiryId;
use persona_sim::{Action, Faults, MAX_SESSIONS_PER_INQUIRY, Status};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::support::sim::{Api, WebhookSink, http_client, open_link, start_sim};
use crate::support::spec::validate_webhook;

fn id_of(doc: &Value) -> String {
    doc["data"]["id"].as_str().expect("inquiry id").to_owned()
}

fn status_of(doc: &Value) -> &str {
    doc["data"]["attributes"]["status"]
        .as_str()
        .expect("status")
}

fn attr_time(doc: &Value, name: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    doc["data"]["attributes"][name].as_str().and_then(parse_ts)
}

fn inquiry_link(sim: &persona_sim::SimHandle, id: &str, token: Option<&str>) -> String {
    let mut url = sim.hosted_flow_url();
    url.query_pairs_mut().append_pair("inquiry-id", id);
    if let Some(t) = token {
        url.query_pairs_mut().append_pair("session-token", t);
    }
    url.to_string()
}

#[tokio::test]
async fn an_inquiry_expires_by_sim_time_and_resume_makes_it_pending_again() {
    let sim = start_sim(|_| {}).await;
    let api = Api::new(&sim);
    let template = sim.templates()[0].0.to_string();
    let created = api
        .create(
            &template,
            json!({"expiration-after-create-interval-seconds": 3600,
                   "expiration-after-resume-interval-seconds": 7200}),
        )
        .await;
    let id = id_of(&created);
    let expires_at = attr_time(&created, "expires-at").expect("a created inquiry expires");
    let created_at = attr_time(&created, "created-at").unwrap();
    assert_eq!((expires_at - created_at).num_seconds(), 3600);
    assert_eq!(open_link(&inquiry_link(&sim, &id, None)).await.status, 200);

    sim.advance_clock(Duration::from_secs(3601));
    let expired = api.get(&format!("/inquiries/{id}")).await.body;
    assert_eq!(status_of(&expired), "expired");
    assert_eq!(attr_time(&expired, "expired-at"), Some(expires_at));
    assert!(expired["data"]["attributes"]["expires-at"].is_null());
    let refused = open_link(&inquiry_link(&sim, &id, None)).await;
    assert_eq!(refused.status, 410, "{:?}", refused.body);
    assert_eq!(refused.body["ok"], false);

    let resumed = api
        .post(&format!("/inquiries/{id}/resume"), None, None)
        .await;
    assert_eq!(resumed.status, 200);
    assert_eq!(status_of(&resumed.body), "pending");
    let now = sim.clock().now();
    let new_expiry = attr_time(&resumed.body, "expires-at").unwrap();
    assert!((new_expiry - now).num_seconds() > 7100 && (new_expiry - now).num_seconds() <= 7200);
    let token = resumed.body["meta"]["session-token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(token.split('.').count(), 3, "JWT-shaped token");

    // A pending inquiry opens only with a valid token for it.
    assert_eq!(open_link(&inquiry_link(&sim, &id, None)).await.status, 403);
    assert_eq!(
        open_link(&inquiry_link(&sim, &id, Some("forged.token.x")))
            .await
            .status,
        403
    );
    let opened = open_link(&inquiry_link(&sim, &id, Some(&token))).await;
    assert_eq!(opened.status, 200, "{:?}", opened.body);
    assert_eq!(opened.body["status"], "pending");

    // Expiry again closes the sessions handed out before.
    sim.advance_clock(Duration::from_secs(7201));
    assert_eq!(
        open_link(&inquiry_link(&sim, &id, Some(&token)))
            .await
            .status,
        410
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn resume_of_a_created_inquiry_gives_a_token_and_changes_nothing_else() {
    let sim = start_sim(|_| {}).await;
    let api = Api::new(&sim);
    let template = sim.templates()[0].0.to_string();
    let created = api.create(&template, json!({})).await;
    let id = id_of(&created);
    let resumed = api
        .post(&format!("/inquiries/{id}/resume"), None, None)
        .await;
    assert_eq!(resumed.status, 200);
    assert_eq!(status_of(&resumed.body), "created");
    assert_eq!(
        resumed.body["data"]["attributes"]["expires-at"],
        created["data"]["attributes"]["expires-at"]
    );
    // An unused session is reused rather than multiplied.
    let again = api
        .post(&format!("/inquiries/{id}/resume"), None, None)
        .await;
    assert_eq!(
        again.body["meta"]["session-token"],
        resumed.body["meta"]["session-token"]
    );
    assert_eq!(
        sim.inquiry(InquiryId::parse(&id).unwrap())
            .unwrap()
            .session_count,
        1
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn finished_inquiries_refuse_resume_with_409() {
    let sim = start_sim(|_| {}).await;
    let api = Api::new(&sim);
    let template = sim.templates()[0].0.to_string();
    for (actions, status) in [
        (vec![Action::Complete], "completed"),
        (vec![Action::Fail], "failed"),
        (
            vec![Action::Complete, Action::MarkForReview],
            "needs_review",
        ),
        (vec![Action::Complete, Action::Approve], "approved"),
        (vec![Action::Fail, Action::Decline], "declined"),
    ] {
        let id = id_of(&api.create(&template, json!({})).await);
        let inquiry = InquiryId::parse(&id).unwrap();
        for a in actions {
            sim.act(&inquiry, a).unwrap();
        }
        let r = api
            .post(&format!("/inquiries/{id}/resume"), None, None)
            .await;
        assert_eq!(r.status, 409, "resume of a {status} inquiry");
        assert_eq!(r.body["errors"][0]["title"], "Conflict");
        let current = api.get(&format!("/inquiries/{id}")).await.body;
        assert_eq!(status_of(&current), status);
        assert_eq!(open_link(&inquiry_link(&sim, &id, None)).await.status, 409);
    }
    // Reviewer actions follow the lifecycle: a created inquiry cannot be approved.
    let id = InquiryId::parse(&id_of(&api.create(&template, json!({})).await)).unwrap();
    assert!(sim.act(&id, Action::Approve).is_err());
    assert_eq!(sim.act(&id, Action::Start).unwrap(), Status::Pending);
    sim.shutdown().await;
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_answer_and_refuses_other_parameters() {
    let sim = start_sim(|_| {}).await;
    let api = Api::new(&sim);
    let template = sim.templates()[0].0.to_string();
    let body = json!({"data": {"attributes": {"inquiry-template-id": template}},
                      "meta": {"auto-create-account-reference-id": "ref_idem"}});
    let first = api
        .post("/inquiries", Some(body.clone()), Some("key-1"))
        .await;
    let second = api
        .post("/inquiries", Some(body.clone()), Some("key-1"))
        .await;
    assert_eq!((first.status, second.status), (201, 201));
    assert_eq!(first.body, second.body);
    assert_eq!(sim.inquiries().len(), 1);
    assert!(sim.requests().last().unwrap().replayed);

    let mut changed = body.clone();
    changed["meta"]["auto-create-account-reference-id"] = json!("ref_other");
    let mismatch = api.post("/inquiries", Some(changed), Some("key-1")).await;
    assert_eq!(mismatch.status, 422);
    assert_eq!(sim.inquiries().len(), 1);

    // Errors are stored too.
    let broken = json!({"data": {"attributes": {}}});
    let e1 = api
        .post("/inquiries", Some(broken.clone()), Some("key-2"))
        .await;
    let e2 = api.post("/inquiries", Some(broken), Some("key-2")).await;
    assert_eq!((e1.status, e2.status), (400, 400));
    assert_eq!(e1.body, e2.body);

    // 401 is answered before the idempotency layer: nothing is stored under the key.
    let denied = api
        .with_key("wrong")
        .post("/inquiries", Some(body.clone()), Some("key-3"))
        .await;
    assert_eq!(denied.status, 401);
    let after = api
        .post("/inquiries", Some(body.clone()), Some("key-3"))
        .await;
    assert_eq!(after.status, 201);
    assert_ne!(id_of(&after.body), id_of(&first.body));

    // Keys are pruned after 24 hours of sim time: the same key then creates anew.
    sim.advance_clock(Duration::from_secs(24 * 3600 + 1));
    let later = api.post("/inquiries", Some(body), Some("key-1")).await;
    assert_eq!(later.status, 201);
    assert_ne!(id_of(&later.body), id_of(&first.body));
    sim.shutdown().await;
}

#[tokio::test]
async fn listing_pages_through_250_inquiries_newest_first_with_relative_links() {
    let sim = start_sim(|_| {}).await;
    let api = Api::new(&sim);
    let template = sim.templates()[0].0.to_string();
    let mut created = Vec::new();
    for _ in 0..250 {
        created.push(id_of(&api.create(&template, json!({})).await));
    }
    created.reverse();

    let mut seen = Vec::new();
    let mut path = "/inquiries?page%5Bsize%5D=100".to_owned();
    let mut pages = Vec::new();
    loop {
        let page = api.get(&path).await;
        assert_eq!(page.status, 200);
        pages.push(page.body.clone());
        seen.extend(
            page.body["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["id"].as_str().unwrap().to_owned()),
        );
        match page.body["links"]["next"].as_str() {
            Some(next) => {
                assert!(
                    next.starts_with("/api/v1/inquiries?"),
                    "relative link {next}"
                );
                assert!(next.contains("page%5Bafter%5D="), "{next}");
                assert!(
                    next.contains("page%5Bsize%5D=100"),
                    "keeps the page size: {next}"
                );
                path = next.trim_start_matches("/api/v1").to_owned();
            }
            None => break,
        }
        assert!(pages.len() <= 3, "more pages than 250 / 100 allows");
    }
    assert_eq!(pages.len(), 3);
    assert_eq!(seen, created, "every inquiry once, newest first");
    assert!(pages[0]["links"]["prev"].is_null());
    let prev = pages[1]["links"]["prev"].as_str().unwrap();
    let back = api.get(prev.trim_start_matches("/api/v1")).await.body;
    assert_eq!(back["data"], pages[0]["data"]);

    let default = api.get("/inquiries").await.body;
    assert_eq!(default["data"].as_array().unwrap().len(), 10);
    sim.shutdown().await;
}

#[tokio::test]
async fn list_filters_by_reference_status_template_and_id() {
    let sim = start_sim(|_| {}).await;
    let api = Api::new(&sim);
    let template = sim.templates()[0].0.to_string();
    let a = id_of(
        &api.create(
            &template,
            json!({"auto-create-account-reference-id": "ref_a"}),
        )
        .await,
    );
    let b = id_of(
        &api.create(
            &template,
            json!({"auto-create-account-reference-id": "ref_b"}),
        )
        .await,
    );
    let c = id_of(
        &api.create(
            &template,
            json!({"auto-create-account-reference-id": "ref_a"}),
        )
        .await,
    );
    sim.act(InquiryId::parse(&c).unwrap(), Action::Start)
        .unwrap();
    let ids = |doc: &Value| -> Vec<String> {
        doc["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let by_ref = api
        .get("/inquiries?filter%5Breference-id%5D=ref_a")
        .await
        .body;
    assert_eq!(ids(&by_ref), vec![c.clone(), a.clone()]);
    let by_status = api
        .get("/inquiries?filter%5Breference-id%5D=ref_a&filter%5Bstatus%5D=created,expired")
        .await
        .body;
    assert_eq!(ids(&by_status), vec![a.clone()]);
    let by_ids = api
        .get(&format!("/inquiries?filter%5Binquiry-id%5D={a},{b}"))
        .await
        .body;
    assert_eq!(ids(&by_ids), vec![b.clone(), a.clone()]);
    let by_template = api
        .get(&format!(
            "/inquiries?filter%5Binquiry-template-id%5D={template}"
        ))
        .await
        .body;
    assert_eq!(ids(&by_template).len(), 3);
    let none = api
        .get("/inquiries?filter%5Binquiry-template-id%5D=itmpl_other")
        .await
        .body;
    assert!(ids(&none).is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn a_wrong_api_key_gets_401_in_persona_words() {
    let sim = start_sim(|_| {}).await;
    let api = Api::new(&sim);
    for r in [
        api.with_key("persona_sandbox_other")
            .get("/inquiries")
            .await,
        api.with_key("")
            .post("/inquiries", Some(json!({})), None)
            .await,
    ] {
        assert_eq!(r.status, 401);
        assert_eq!(
            r.body,
            json!({"errors": [{"title": "Must be authenticated to access this endpoint"}]})
        );
        assert!(r.header("ratelimit-limit").is_none());
    }
    let unknown_path = api.get("/no-such-endpoint").await;
    assert_eq!(unknown_path.status, 404);
    assert_eq!(unknown_path.body["errors"][0]["title"], "Record not found");
    assert!(unknown_path.header("ratelimit-remaining").is_some());
    let no_header = http_client()
        .get(api.url("/inquiries"))
        .send()
        .await
        .unwrap();
    assert_eq!(no_header.status().as_u16(), 401);
    sim.shutdown().await;
}

#[tokio::test]
async fn the_rate_limit_answers_429_with_headers_until_the_window_resets() {
    let sim = start_sim(|c| c.rate_limit_per_minute = Some(5)).await;
    let api = Api::new(&sim);
    for expected_remaining in (0..5).rev() {
        let r = api.get("/rate-limits").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("ratelimit-limit"), Some("5"));
        assert_eq!(
            r.header("ratelimit-remaining"),
            Some(expected_remaining.to_string().as_str())
        );
        assert!(r.header("request-id").unwrap().starts_with("req_"));
        assert_eq!(
            r.body["data"][0]["attributes"]["remaining"],
            expected_remaining
        );
    }
    let template = sim.templates()[0].0.to_string();
    let body = json!({"data": {"attributes": {"inquiry-template-id": template}}});
    let limited = api
        .post("/inquiries", Some(body.clone()), Some("limited-key"))
        .await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.body["errors"][0]["title"], "Rate limit exceeded");
    assert_eq!(limited.header("ratelimit-limit"), Some("5"));
    assert_eq!(limited.header("ratelimit-remaining"), Some("0"));
    let reset: i64 = limited.header("ratelimit-reset").unwrap().parse().unwrap();
    assert!((1..=60).contains(&reset), "reset {reset}");
    assert!(
        limited.header("retry-after").is_none(),
        "Persona sends no Retry-After"
    );

    sim.advance_clock(Duration::from_secs(61));
    // The 429 was not stored under the key: the retry creates the inquiry.
    let retried = api
        .post("/inquiries", Some(body), Some("limited-key"))
        .await;
    assert_eq!(retried.status, 201);
    assert_eq!(retried.header("ratelimit-remaining"), Some("4"));
    sim.shutdown().await;
}

#[tokio::test]
async fn a_one_time_link_opens_once_and_not_for_expired_inquiries() {
    let sim = start_sim(|_| {}).await;
    let api = Api::new(&sim);
    let template = sim.templates()[0].0.to_string();
    let created = api
        .create(&template, json!({"auto-create-one-time-link": true}))
        .await;
    let id = id_of(&created);
    let link = created["meta"]["one-time-link"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(link.starts_with(sim.hosted_flow_url().as_str()), "{link}");
    let first = open_link(&link).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(first.body["inquiry-id"], id.as_str());
    let second = open_link(&link).await;
    assert_eq!(second.status, 403);
    assert_eq!(second.body["ok"], false);

    // A link's own lifetime counts.
    let short = api
        .post(
            &format!("/inquiries/{id}/generate-one-time-link"),
            Some(json!({"meta": {"expires-in-seconds": 60}})),
            None,
        )
        .await;
    sim.advance_clock(Duration::from_secs(61));
    assert_eq!(
        open_link(short.body["meta"]["one-time-link"].as_str().unwrap())
            .await
            .status,
        403
    );

    // Expired inquiries get no link until resumed.
    api.post(&format!("/inquiries/{id}/expire"), None, None)
        .await;
    let refused = api
        .post(
            &format!("/inquiries/{id}/generate-one-time-link"),
            None,
            None,
        )
        .await;
    assert_eq!(refused.status, 409);
    assert!(
        refused.body["errors"][0]["details"]
            .as_str()
            .unwrap()
            .contains("resume")
    );
    api.post(&format!("/inquiries/{id}/resume"), None, None)
        .await;
    let fresh = api
        .post(
            &format!("/inquiries/{id}/generate-one-time-link"),
            None,
            None,
        )
        .await;
    assert_eq!(fresh.status, 200);
    let opened = open_link(fresh.body["meta"]["one-time-link"].as_str().unwrap()).await;
    assert_eq!(opened.status, 200);
    assert_eq!(opened.body["status"], "pending");
    sim.shutdown().await;
}

#[tokio::test]
async fn sessions_are_capped_per_inquiry() {
    let sim = start_sim(|_| {}).await;
    let api = Api::new(&sim);
    let template = sim.templates()[0].0.to_string();
    let id = id_of(
        &api.create(&template, json!({"auto-create-inquiry-session": true}))
            .await,
    );
    for _ in 1..MAX_SESSIONS_PER_INQUIRY {
        let r = api
            .post(
                &format!("/inquiries/{id}/generate-one-time-link"),
                None,
                None,
            )
            .await;
        assert_eq!(r.status, 200);
    }
    let over = api
        .post(
            &format!("/inquiries/{id}/generate-one-time-link"),
            None,
            None,
        )
        .await;
    assert_eq!(over.status, 422, "{:?}", over.body);
    let snapshot = sim.inquiry(InquiryId::parse(&id).unwrap()).unwrap();
    assert_eq!(snapshot.session_count, MAX_SESSIONS_PER_INQUIRY);
    assert_eq!(snapshot.status, Status::Created);
    sim.shutdown().await;
}

#[tokio::test]
async fn inquiries_stay_pinned_to_the_template_version_they_were_created_on() {
    let sim = start_sim(|_| {}).await;
    let api = Api::new(&sim);
    let (template, first_version) = sim.templates()[0].clone();
    let old = id_of(&api.create(template.as_str(), json!({})).await);
    let new_version = sim.publish_template_version(&template).unwrap();
    assert_ne!(new_version, first_version);
    let new = id_of(&api.create(template.as_str(), json!({})).await);

    let check = |doc: &Value| {
        let pinned = doc["data"]["relationships"]["inquiry-template-version"]["data"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let included = doc["included"].as_array().unwrap();
        let tpl = included
            .iter()
            .find(|o| o["type"] == "inquiry-template")
            .unwrap();
        let latest = tpl["relationships"]["latest-published-version"]["data"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        (pinned, latest)
    };
    let old_doc = api
        .get(&format!("/inquiries/{old}?include=inquiry-template"))
        .await
        .body;
    assert_eq!(
        check(&old_doc),
        (first_version.to_string(), new_version.to_string())
    );
    let new_doc = api
        .get(&format!("/inquiries/{new}?include=inquiry-template"))
        .await
        .body;
    assert_eq!(
        check(&new_doc),
        (new_version.to_string(), new_version.to_string())
    );
    assert!(
        api.get(&format!("/inquiries/{old}"))
            .await
            .body
            .get("included")
            .is_none()
    );

    let tpl = api
        .get(&format!("/inquiry-templates/{template}"))
        .await
        .body;
    assert_eq!(
        tpl["data"]["relationships"]["latest-published-version"]["data"]["id"],
        new_version.as_str()
    );
    assert_eq!(
        open_link(&inquiry_link(&sim, &old, None)).await.body["latest-version"],
        false
    );
    assert_eq!(
        open_link(&inquiry_link(&sim, &new, None)).await.body["latest-version"],
        true
    );

    // Creating by version id pins that (older) version.
    let pinned = api
        .post(
            "/inquiries",
            Some(json!({"data": {"attributes": {"inquiry-template-version-id": first_version.as_str()}}})),
            None,
        )
        .await
        .body;
    assert_eq!(
        pinned["data"]["relationships"]["inquiry-template-version"]["data"]["id"],
        first_version.as_str()
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_static_link_creates_a_new_inquiry_with_the_reference_id() {
    let sim = start_sim(|_| {}).await;
    let api = Api::new(&sim);
    let template = sim.templates()[0].0.to_string();
    let mut url = sim.hosted_flow_url();
    url.query_pairs_mut()
        .append_pair("inquiry-template-id", &template)
        .append_pair("reference-id", "ref_static");
    let opened = open_link(url.as_str()).await;
    assert_eq!(opened.status, 200);
    assert_eq!(opened.body["status"], "created");
    let listed = api
        .get("/inquiries?filter%5Breference-id%5D=ref_static")
        .await
        .body;
    assert_eq!(listed["data"][0]["id"], opened.body["inquiry-id"]);
    let again = open_link(url.as_str()).await;
    assert_ne!(
        again.body["inquiry-id"], opened.body["inquiry-id"],
        "a new inquiry per visit"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn webhooks_are_signed_with_the_shared_secret() {
    let sink = WebhookSink::start().await;
    let secret = "wbhsec_semantics_secret";
    let sim = start_sim(|c| c.webhook = Some(sink.target(secret))).await;
    let api = Api::new(&sim);
    let template = sim.templates()[0].0.to_string();
    let id = id_of(&api.create(&template, json!({})).await);
    sim.act(InquiryId::parse(&id).unwrap(), Action::Complete)
        .unwrap();
    let deliveries = sim.wait_for_deliveries(3, Duration::from_secs(10)).await;
    assert_eq!(deliveries.len(), 3);
    assert!(deliveries.iter().all(|d| d.status == Some(200)));

    let received = sink.received();
    let names: Vec<String> = received
        .iter()
        .map(|w| {
            let header = w.headers["persona-signature"].to_str().unwrap();
            let (t, v1) = header
                .split_once(',')
                .map(|(t, v)| {
                    (
                        t.strip_prefix("t=").unwrap(),
                        v.strip_prefix("v1=").unwrap(),
                    )
                })
                .unwrap();
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
            mac.update(t.as_bytes());
            mac.update(b".");
            mac.update(&w.body);
            mac.verify_slice(&hex::decode(v1).unwrap())
                .expect("signature verifies");
            let mut wrong = Hmac::<Sha256>::new_from_slice(b"another secret").unwrap();
            wrong.update(format!("{t}.").as_bytes());
            wrong.update(&w.body);
            assert!(wrong.verify_slice(&hex::decode(v1).unwrap()).is_err());

            let body: Value = serde_json::from_slice(&w.body).unwrap();
            assert!(body["data"]["id"].as_str().unwrap().starts_with("evt_"));
            assert_eq!(
                body["data"]["attributes"]["payload"]["data"]["id"],
                id.as_str()
            );
            let name = body["data"]["attributes"]["name"]
                .as_str()
                .unwrap()
                .to_owned();
            validate_webhook(&name, &body).expect("webhook body matches the spec");
            name
        })
        .collect();
    assert_eq!(
        names,
        ["inquiry.created", "inquiry.started", "inquiry.completed"]
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_dropped_connection_loses_the_answer_but_an_idempotent_retry_recovers_it() {
    let sim = start_sim(|_| {}).await;
    let api = Api::new(&sim);
    let template = sim.templates()[0].0.to_string();
    let body = json!({"data": {"attributes": {"inquiry-template-id": template}}});
    sim.set_faults(Faults {
        drops_next: 1,
        ..Faults::default()
    });
    let lost = api
        .try_post("/inquiries", Some(body.clone()), Some("drop-key"))
        .await;
    assert!(
        lost.is_err(),
        "the connection closes without an answer: {lost:?}"
    );
    assert_eq!(sim.requests()[0].status, None);
    assert_eq!(
        sim.inquiries().len(),
        1,
        "the request was processed before the drop"
    );
    let retry = api.post("/inquiries", Some(body), Some("drop-key")).await;
    assert_eq!(retry.status, 201);
    assert_eq!(id_of(&retry.body), sim.inquiries()[0].id.to_string());
    assert_eq!(sim.inquiries().len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn injected_server_errors_are_stored_under_their_idempotency_key() {
    let sim = start_sim(|_| {}).await;
    let api = Api::new(&sim);
    let template = sim.templates()[0].0.to_string();
    let body = json!({"data": {"attributes": {"inquiry-template-id": template}}});
    sim.set_faults(Faults {
        server_errors_next: 1,
        ..Faults::default()
    });
    let failed = api
        .post("/inquiries", Some(body.clone()), Some("k500"))
        .await;
    assert_eq!(failed.status, 500);
    assert_eq!(
        api.post("/inquiries", Some(body.clone()), Some("k500"))
            .await
            .status,
        500
    );
    assert!(sim.inquiries().is_empty());
    assert_eq!(
        api.post("/inquiries", Some(body), Some("fresh"))
            .await
            .status,
        201
    );
    assert_eq!(sim.count_requests("POST", "/inquiries"), 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn the_control_surface_works_over_http() {
    let clock = Clock::system();
    let shared = clock.clone();
    let sim = start_sim(move |c| c.clock = Arc::new(shared)).await;
    let api = Api::new(&sim);
    let control = sim.control_url().to_string();
    let http = http_client();
    let template = sim.templates()[0].0.to_string();
    let id = id_of(&api.create(&template, json!({})).await);

    let before = clock.offset();
    let moved: Value = http
        .post(format!("{control}/clock/advance"))
        .json(&json!({"seconds": 3600}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(clock.offset() - before, Duration::from_secs(3600));
    assert!(parse_ts(moved["now"].as_str().unwrap()).is_some());

    let started = http
        .post(format!("{control}/inquiries/{id}/start"))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status().as_u16(), 200);
    let conflict = http
        .post(format!("{control}/inquiries/{id}/start"))
        .send()
        .await
        .unwrap();
    assert_eq!(conflict.status().as_u16(), 409);
    let published: Value = http
        .post(format!("{control}/templates/{template}/versions"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        published["version-id"]
            .as_str()
            .unwrap()
            .starts_with("itmplv_")
    );
    let faults = http
        .put(format!("{control}/faults"))
        .json(&json!({"rate-limited-next": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(faults.status().as_u16(), 200);
    assert_eq!(api.get("/rate-limits").await.status, 429);
    let snapshot: Value = http
        .get(format!("{control}/inquiries/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(snapshot["status"], "pending");
    let cleared = http
        .delete(format!("{control}/requests"))
        .send()
        .await
        .unwrap();
    assert_eq!(cleared.status().as_u16(), 204);
    assert!(sim.requests().is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn control_is_absent_when_disabled_and_shutdown_frees_the_port() {
    let sim = start_sim(|c| c.control = false).await;
    let control = sim.control_url();
    let api_base = sim.api_base();
    let r = http_client()
        .get(format!("{control}/clock"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    sim.shutdown().await;
    let after = http_client()
        .get(format!("{api_base}/rate-limits"))
        .send()
        .await;
    assert!(after.is_err(), "nothing listens after shutdown");
}

#[tokio::test]
async fn request_keys_in_snake_case_are_accepted() {
    let sim = start_sim(|_| {}).await;
    let api = Api::new(&sim);
    let template = sim.templates()[0].0.to_string();
    let r = api
        .post(
            "/inquiries",
            Some(
                json!({"data": {"attributes": {"inquiry_template_id": template,
                                               "fields": {"name_first": "Alex"}}},
                        "meta": {"autoCreateAccountReferenceId": "ref_snake"}}),
            ),
            None,
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["data"]["attributes"]["reference-id"], "ref_snake");
    // Field keys are not inflected.
    assert_eq!(
        r.body["data"]["attributes"]["fields"]["name_first"]["value"],
        "Alex"
    );
    let unknown = api
        .post(
            "/inquiries",
            Some(
                json!({"data": {"attributes": {"inquiry-template-id": template, "colour": "red"}}}),
            ),
            None,
        )
        .await;
    assert_eq!(unknown.status, 400);
    let ids: HashSet<_> = sim.inquiries().into_iter().map(|i| i.id).collect();
    assert_eq!(ids.len(), 1);
    sim.shutdown().await;
}
