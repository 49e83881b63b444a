//! The Persona client against a scripted fake over loopback HTTP: headers and bodies on the
//! wire, retries with the same idempotency key, 429 handling, pagination and log hygiene.

use std::time::Duration;

use inquiry_mailer::domain::{
    Birthdate, Email, InquiryId, InquiryStatus, PersonName, ReferenceId, TemplateId,
};
use inquiry_mailer::persona::{
    CreateInquiry, IdempotencyKey, InquiryFields, ListFilter, PersonaClient, PersonaError,
};
use serde_json::{Value, json};

use crate::support::persona::{
    API_KEY, API_VERSION, CapturedLogs, FakePersona, Reply, inquiry, rate_headers,
};

fn create_request() -> CreateInquiry {
    CreateInquiry {
        template_id: TemplateId::parse("itmpl_TEST").unwrap(),
        reference_id: ReferenceId::parse("ref_TEST").unwrap(),
        fields: InquiryFields {
            name_first: Some(PersonName::parse("first name", "Alex").unwrap()),
            name_last: Some(PersonName::parse("last name", "Sample").unwrap()),
            birthdate: Some(Birthdate::parse("1980-02-29").unwrap()),
            phone_number: None,
            email_address: Some(Email::parse("alex@example.com").unwrap()),
        },
        redirect_uri: None,
        auto_create_session: true,
        auto_create_one_time_link: false,
        one_time_link_expires_in: None,
        expires_after: Some(Duration::from_secs(7 * 86_400)),
        note: None,
    }
}

fn created_body(id: &str, token: Option<&str>, link: Option<&str>) -> Value {
    json!({
        "data": inquiry(id, "created"),
        "meta": {"session-token": token, "one-time-link": link, "one-time-link-short": null}
    })
}

fn key(s: &str) -> IdempotencyKey {
    IdempotencyKey::parse(s).unwrap()
}

fn inq(s: &str) -> InquiryId {
    InquiryId::parse(s).unwrap()
}

#[tokio::test]
async fn create_sends_persona_headers_and_a_kebab_case_body() {
    let fake = FakePersona::start([Reply::json(
        201,
        created_body("inq_NEW", Some("eyJ.token"), None),
    )])
    .await;

    let created = fake
        .client()
        .create_inquiry(&create_request(), &key("create-usr_1-1"))
        .await
        .unwrap();

    assert_eq!(created.inquiry.id.as_str(), "inq_NEW");
    assert_eq!(created.inquiry.status, InquiryStatus::Created);
    assert_eq!(created.session_token.unwrap().expose(), "eyJ.token");
    assert!(created.one_time_link.is_none());

    let seen = fake.seen();
    assert_eq!(seen.len(), 1);
    let req = &seen[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/api/v1/inquiries");
    assert_eq!(
        req.header("authorization"),
        Some(format!("Bearer {API_KEY}").as_str())
    );
    assert_eq!(req.header("persona-version"), Some(API_VERSION));
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(req.header("accept"), Some("application/json"));
    assert_eq!(req.header("idempotency-key"), Some("create-usr_1-1"));
    assert_eq!(
        req.body.as_ref().unwrap(),
        &json!({
            "data": {"attributes": {
                "inquiry-template-id": "itmpl_TEST",
                "fields": {
                    "name-first": "Alex", "name-last": "Sample",
                    "birthdate": "1980-02-29", "email-address": "alex@example.com"
                }
            }},
            "meta": {
                "auto-create-account-reference-id": "ref_TEST",
                "auto-create-inquiry-session": true,
                // SPEC release 2: the create, start and resume intervals all follow expires_after.
                "expiration-after-create-interval-seconds": 604800,
                "expiration-after-start-interval-seconds": 604800,
                "expiration-after-resume-interval-seconds": 604800
            }
        })
    );
}

#[tokio::test]
async fn reads_never_send_an_idempotency_key_and_retrieve_can_include_the_template() {
    let mut retrieved = json!({"data": inquiry("inq_A", "pending")});
    retrieved["included"] = json!([{
        "type": "inquiry-template", "id": "itmpl_TEST",
        "attributes": {"status": "active"},
        "relationships": {"latest-published-version": {"data": {"type": "inquiry-template-version", "id": "itmplv_NEW"}}}
    }]);
    let fake = FakePersona::start([
        Reply::json(200, retrieved),
        Reply::json(200, json!({"data": [{"type": "rate-limit/api", "attributes": {"limit": 300, "remaining": 250, "seconds-to-reset": 60}}]})),
    ])
    .await;
    let client = fake.client();

    let r = client.retrieve_inquiry(&inq("inq_A"), true).await.unwrap();
    assert_eq!(
        r.inquiry.template_version_id.unwrap().as_str(),
        "itmplv_OLD"
    );
    assert_eq!(r.latest_published_version.unwrap().as_str(), "itmplv_NEW");
    let limits = client.rate_limits().await.unwrap();
    assert_eq!(
        (
            limits[0].limit,
            limits[0].remaining,
            limits[0].seconds_to_reset
        ),
        (300, 250, 60)
    );

    let seen = fake.seen();
    assert_eq!(seen[0].path, "/api/v1/inquiries/inq_A");
    assert_eq!(seen[0].query_value("include"), Some("inquiry-template"));
    assert_eq!(seen[1].path, "/api/v1/rate-limits");
    for req in &seen {
        assert_eq!(req.method, "GET");
        assert_eq!(req.header("idempotency-key"), None);
        assert_eq!(req.header("content-type"), None);
    }
}

#[tokio::test]
async fn a_dropped_answer_is_retried_with_the_same_idempotency_key() {
    let fake = FakePersona::start([
        Reply::CutOff,
        Reply::json(201, created_body("inq_NEW", None, None)),
    ])
    .await;

    let created = fake
        .client()
        .create_inquiry(&create_request(), &key("create-usr_1-7"))
        .await
        .unwrap();

    assert_eq!(created.inquiry.id.as_str(), "inq_NEW");
    let keys: Vec<_> = fake
        .seen()
        .iter()
        .map(|r| r.header("idempotency-key").map(str::to_owned))
        .collect();
    assert_eq!(keys, vec![Some("create-usr_1-7".to_owned()); 2]);
}

#[tokio::test]
async fn a_429_waits_for_rate_limit_reset_and_retries_with_the_same_key() {
    let fake = FakePersona::start([
        Reply::with_headers(
            429,
            rate_headers(300, 0, 1),
            json!({"errors": [{"title": "Rate limit exceeded"}]}),
        ),
        Reply::json(
            200,
            json!({"data": inquiry("inq_A", "pending"), "meta": {"session-token": "eyJ.resumed"}}),
        ),
    ])
    .await;
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let metrics = recorder.handle();
    let _metrics_guard = metrics::set_default_local_recorder(&recorder);

    let (inquiry, token) = fake
        .client()
        .resume_inquiry(&inq("inq_A"), &key("resume-1"))
        .await
        .unwrap();

    assert_eq!(inquiry.status, InquiryStatus::Pending);
    assert_eq!(token.expose(), "eyJ.resumed");
    let seen = fake.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[0].header("idempotency-key"),
        seen[1].header("idempotency-key")
    );
    // Persona sends no Retry-After: the client must have waited out RateLimit-Reset.
    assert!(seen[1].at - seen[0].at >= Duration::from_secs(1));
    let counted = metrics.render();
    for line in [
        r#"persona_requests_total{endpoint="resume_inquiry",outcome="rate_limited"} 1"#,
        r#"persona_requests_total{endpoint="resume_inquiry",outcome="ok"} 1"#,
        r#"persona_rate_limited_total{endpoint="resume_inquiry"} 1"#,
    ] {
        assert!(counted.contains(line), "{line} missing from:\n{counted}");
    }
}

#[tokio::test]
async fn after_a_429_other_callers_wait_too() {
    let fake = FakePersona::start([
        Reply::with_headers(
            429,
            rate_headers(300, 0, 1),
            json!({"errors": [{"title": "Rate limit exceeded"}]}),
        ),
        Reply::json(200, json!({"data": inquiry("inq_B", "created")})),
    ])
    .await;
    let mut config = fake.config();
    config.max_retries = 0;
    let first = PersonaClient::new(config).unwrap();
    let other = first.clone();

    let err = first
        .retrieve_inquiry(&inq("inq_A"), false)
        .await
        .unwrap_err();
    assert!(err.is_rate_limited() && err.is_transient(), "{err}");
    other.retrieve_inquiry(&inq("inq_B"), false).await.unwrap();

    let seen = fake.seen();
    assert!(seen[1].at - seen[0].at >= Duration::from_secs(1));
}

#[tokio::test]
async fn little_budget_left_spreads_the_next_calls_over_the_reset() {
    let retrieved = || json!({"data": inquiry("inq_A", "pending")});
    // 2 of 100 left with 2 s to go: under 15 %, so one call per second.
    let fake = FakePersona::start([
        Reply::with_headers(200, rate_headers(100, 2, 2), retrieved()),
        Reply::with_headers(200, rate_headers(100, 1, 2), retrieved()),
        Reply::with_headers(200, rate_headers(100, 90, 60), retrieved()),
    ])
    .await;
    let client = fake.client();

    for _ in 0..3 {
        client.retrieve_inquiry(&inq("inq_A"), false).await.unwrap();
    }

    let seen = fake.seen();
    assert!(seen[2].at - seen[0].at >= Duration::from_secs(1));
}

#[tokio::test]
async fn a_422_is_permanent_not_retried_and_names_the_pointer() {
    let fake = FakePersona::start([
        Reply::json(
            422,
            json!({"errors": [{
                "title": "Record invalid",
                "details": "Birthdate is not a valid date",
                "source": {"pointer": "/data/attributes/fields/birthdate"}
            }]}),
        ),
        Reply::json(201, created_body("inq_NEVER", None, None)),
    ])
    .await;

    let err = fake
        .client()
        .create_inquiry(&create_request(), &key("create-usr_1-2"))
        .await
        .unwrap_err();

    assert!(!err.is_transient());
    assert_eq!(err.status(), Some(422));
    assert_eq!(
        err.to_string(),
        "Persona POST /inquiries answered 422 Record invalid: Birthdate is not a valid date \
         (pointer /data/attributes/fields/birthdate)"
    );
    assert_eq!(fake.seen().len(), 1);
    assert_eq!(fake.unanswered(), 1);
}

#[tokio::test]
async fn transient_failures_stop_after_max_retries() {
    let unavailable = || Reply::json(503, json!({"errors": [{"title": "Service unavailable"}]}));
    let fake = FakePersona::start([
        unavailable(),
        unavailable(),
        unavailable(),
        unavailable(),
        Reply::json(200, json!({"data": inquiry("inq_A", "expired")})),
    ])
    .await;

    let err = fake
        .client()
        .expire_inquiry(&inq("inq_A"), &key("expire-1"))
        .await
        .unwrap_err();

    assert!(err.is_transient());
    assert_eq!(err.status(), Some(503));
    assert_eq!(fake.seen().len(), 4, "one try and max_retries = 3 retries");
    assert_eq!(fake.unanswered(), 1);
}

#[tokio::test]
async fn a_slow_answer_times_out_as_a_transient_error() {
    let fake = FakePersona::start([Reply::Slow(
        Duration::from_secs(3),
        Box::new(Reply::json(
            200,
            json!({"data": inquiry("inq_A", "pending")}),
        )),
    )])
    .await;
    let mut config = fake.config();
    config.timeout = Duration::from_millis(200);
    config.max_retries = 0;

    let err = PersonaClient::new(config)
        .unwrap()
        .retrieve_inquiry(&inq("inq_A"), false)
        .await
        .unwrap_err();

    assert!(
        matches!(
            err,
            PersonaError::Unreachable {
                timed_out: true,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.is_transient());
}

#[tokio::test]
async fn an_unusable_success_body_is_its_own_error() {
    let fake = FakePersona::start([Reply::json(
        200,
        json!({"data": {"id": "inq_A", "attributes": {}}}),
    )])
    .await;
    let err = fake
        .client()
        .generate_one_time_link(&inq("inq_A"), Duration::from_secs(3600), &key("otl-1"))
        .await
        .unwrap_err();
    assert!(matches!(err, PersonaError::Malformed { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("data.attributes.status is missing"),
        "{err}"
    );
    assert!(!err.is_transient());
    assert_eq!(
        fake.seen()[0].body.as_ref().unwrap(),
        &json!({"meta": {"expires-in-seconds": 3600}})
    );
}

fn page(ids: &[&str], next: Option<&str>) -> Reply {
    let data: Vec<Value> = ids.iter().map(|id| inquiry(id, "created")).collect();
    Reply::json(
        200,
        json!({"data": data, "links": {"prev": null, "next": next}}),
    )
}

#[tokio::test]
async fn listing_follows_relative_next_links_to_the_end() {
    let fake = FakePersona::start([
        page(
            &["inq_1", "inq_2"],
            Some("/api/v1/inquiries?page%5Bafter%5D=inq_2"),
        ),
        page(
            &["inq_3", "inq_4"],
            Some("/api/v1/inquiries?page%5Bafter%5D=inq_4"),
        ),
        page(&["inq_5"], None),
    ])
    .await;
    let filter = ListFilter {
        statuses: vec![InquiryStatus::Created, InquiryStatus::Pending],
        template_id: Some(TemplateId::parse("itmpl_TEST").unwrap()),
        ..ListFilter::default()
    };

    let all = fake.client().list_inquiries(&filter).await.unwrap();

    let ids: Vec<&str> = all.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["inq_1", "inq_2", "inq_3", "inq_4", "inq_5"]);
    let seen = fake.seen();
    assert_eq!(seen.len(), 3);
    let afters: Vec<Option<&str>> = seen.iter().map(|r| r.query_value("page[after]")).collect();
    assert_eq!(afters, [None, Some("inq_2"), Some("inq_4")]);
    for req in &seen {
        assert_eq!(req.path, "/api/v1/inquiries");
        assert_eq!(req.query_value("filter[status]"), Some("created,pending"));
        assert_eq!(
            req.query_value("filter[inquiry-template-id]"),
            Some("itmpl_TEST")
        );
        assert_eq!(req.query_value("page[size]"), Some("100"));
    }
}

#[tokio::test]
async fn pages_can_be_taken_one_at_a_time() {
    let fake = FakePersona::start([
        page(&["inq_1"], Some("/api/v1/inquiries?page%5Bafter%5D=inq_1")),
        page(&[], None),
    ])
    .await;
    let filter = ListFilter {
        reference_id: Some(ReferenceId::parse("ref_TEST").unwrap()),
        ..ListFilter::default()
    };
    let mut pages = fake.client().inquiry_pages(&filter);
    assert_eq!(pages.next_page().await.unwrap().unwrap().len(), 1);
    assert_eq!(
        fake.seen().len(),
        1,
        "the second page is fetched only when asked for"
    );
    assert_eq!(pages.next_page().await.unwrap().unwrap().len(), 0);
    assert!(pages.next_page().await.unwrap().is_none());
    assert_eq!(
        fake.seen()[0].query_value("filter[reference-id]"),
        Some("ref_TEST")
    );
}

#[tokio::test]
async fn concurrent_calls_are_in_flight_together() {
    let answer = || {
        Reply::WhenInFlight(
            10,
            Box::new(Reply::json(
                200,
                json!({"data": inquiry("inq_A", "pending")}),
            )),
        )
    };
    let fake = FakePersona::start((0..10).map(|_| answer())).await;
    let client = fake.client();

    let calls = (0..10).map(|_| {
        let client = client.clone();
        tokio::spawn(async move { client.retrieve_inquiry(&inq("inq_A"), false).await })
    });
    for call in calls.collect::<Vec<_>>() {
        call.await.unwrap().unwrap();
    }

    assert_eq!(fake.max_in_flight(), 10);
}

#[tokio::test]
async fn secrets_never_reach_the_logs() {
    let (logs, _guard) = CapturedLogs::start();
    let fake = FakePersona::start([
        Reply::json(
            201,
            json!({
                "data": inquiry("inq_NEW", "created"),
                "meta": {
                    "session-token": "eyJ.SESSION-SECRET",
                    "one-time-link": "https://withpersona.com/verify?code=OTL-SECRET",
                    "one-time-link-short": "https://go.perso.na/OTL-SECRET-SHORT"
                }
            }),
        ),
        Reply::json(200, json!({"data": inquiry("inq_NEW", "pending"), "meta": {"session-token": "eyJ.RESUME-SECRET"}})),
        Reply::json(200, json!({"data": inquiry("inq_NEW", "pending"), "meta": {"one-time-link": "https://withpersona.com/verify?code=LINK-SECRET", "one-time-link-short": null}})),
        Reply::json(401, json!({"errors": [{"title": "Token is invalid"}]})),
    ])
    .await;
    let client = fake.client();

    let created = client
        .create_inquiry(&create_request(), &key("k1"))
        .await
        .unwrap();
    let resumed = client
        .resume_inquiry(&inq("inq_NEW"), &key("k2"))
        .await
        .unwrap();
    let link = client
        .generate_one_time_link(&inq("inq_NEW"), Duration::from_secs(600), &key("k3"))
        .await
        .unwrap();
    let err = client.rate_limits().await.unwrap_err();
    tracing::info!(?created, ?resumed, ?link, %err, ?client, "values as a careless caller would log them");

    let text = logs.text();
    assert!(
        text.contains("Persona answered"),
        "the capture works: {text}"
    );
    assert!(
        text.contains("[redacted]"),
        "bodies are logged at trace, redacted"
    );
    for secret in [
        API_KEY,
        "SESSION-SECRET",
        "OTL-SECRET",
        "RESUME-SECRET",
        "LINK-SECRET",
    ] {
        assert!(
            !text.contains(secret),
            "{secret} leaked into the logs:\n{text}"
        );
    }
}
