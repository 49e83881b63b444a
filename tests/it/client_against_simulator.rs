//! The real Persona client against the real simulator over HTTP: every call works, and every
//! request the client sends and every answer it gets validates against Persona's spec.

use std::num::NonZeroU32;
use std::time::Duration;

use inquiry_mailer::domain::{
    ApiKey, Email, InquiryStatus, PersonName, ReferenceId, TemplateId, TemplateVersionId,
};
use inquiry_mailer::persona::{
    ClientConfig, CreateInquiry, IdempotencyKey, InquiryFields, ListFilter, PersonaClient,
};
use persona_sim::{Faults, SimHandle};

use crate::support::sim::{API_KEY, start_sim};
use crate::support::spec::{validate_request_body, validate_response};

fn client(sim: &SimHandle, rpm: u32) -> PersonaClient {
    PersonaClient::new(ClientConfig {
        api_base: sim.api_base(),
        api_version: "2025-12-08".into(),
        api_key: ApiKey::new(API_KEY),
        requests_per_minute: NonZeroU32::new(rpm).unwrap(),
        timeout: Duration::from_secs(10),
        max_retries: 4,
        retry_base_delay: Duration::from_millis(20),
    })
    .unwrap()
}

fn request(sim: &SimHandle, reference: &ReferenceId, one_time: bool) -> CreateInquiry {
    CreateInquiry {
        template_id: TemplateId::parse(&sim.templates()[0].0).unwrap(),
        reference_id: reference.clone(),
        fields: InquiryFields {
            name_first: Some(PersonName::parse("name_first", "Alexander").unwrap()),
            name_last: Some(PersonName::parse("name_last", "Sample").unwrap()),
            birthdate: Some(inquiry_mailer::domain::Birthdate::parse("1977-08-31").unwrap()),
            phone_number: None,
            email_address: Some(Email::parse("alex@example.com").unwrap()),
        },
        redirect_uri: Some("https://app.example.com/verified".parse().unwrap()),
        auto_create_session: false,
        auto_create_one_time_link: one_time,
        one_time_link_expires_in: one_time.then_some(Duration::from_secs(3600)),
        expires_after: Some(Duration::from_secs(7 * 86_400)),
        note: None,
    }
}

/// Every request in the simulator's log, and its answer, checked against the spec.
fn assert_all_conform(sim: &SimHandle) {
    let mut failures = Vec::new();
    for r in sim.requests() {
        let Some(route) = r.route.as_deref() else {
            failures.push(format!("{} {} is not a documented route", r.method, r.path));
            continue;
        };
        if let (Some(status), Some(response)) = (r.status, r.response.as_ref())
            && let Err(e) = validate_response(&r.method, route, status, response)
        {
            failures.push(format!("answer {} {route} → {status}: {e:?}", r.method));
        }
        if let Some(body) = &r.body
            && let Err(e) = validate_request_body(&r.method, route, body)
        {
            failures.push(format!("request {} {route}: {e:?}", r.method));
        }
    }
    assert!(
        failures.is_empty(),
        "spec violations:\n{}",
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_works_and_every_request_the_client_sends_matches_the_spec() {
    let sim = start_sim(|_| {}).await;
    let persona = client(&sim, 6000);
    let reference = ReferenceId::generate();

    let created = persona
        .create_inquiry(
            &request(&sim, &reference, true),
            &IdempotencyKey::generate(),
        )
        .await
        .unwrap();
    assert_eq!(created.inquiry.status, InquiryStatus::Created);
    assert!(created.one_time_link.is_some());
    assert_eq!(created.inquiry.fields["name-first"].value, "Alexander");
    let id = created.inquiry.id.clone();

    let got = persona.retrieve_inquiry(&id, true).await.unwrap();
    assert_eq!(
        got.latest_published_version,
        Some(TemplateVersionId::parse(&sim.templates()[0].1).unwrap())
    );
    let listed = persona
        .list_inquiries(&ListFilter {
            reference_id: Some(reference.clone()),
            statuses: vec![InquiryStatus::Created, InquiryStatus::Pending],
            ..ListFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    let (_, link) = persona
        .generate_one_time_link(&id, Duration::from_secs(600), &IdempotencyKey::generate())
        .await
        .unwrap();
    assert!(link.expose().contains("code="));
    let expired = persona
        .expire_inquiry(&id, &IdempotencyKey::generate())
        .await
        .unwrap();
    assert_eq!(expired.status, InquiryStatus::Expired);
    let (resumed, token) = persona
        .resume_inquiry(&id, &IdempotencyKey::generate())
        .await
        .unwrap();
    assert_eq!(resumed.status, InquiryStatus::Pending);
    assert!(!token.expose().is_empty());
    let template = persona
        .retrieve_template(&TemplateId::parse(&sim.templates()[0].0).unwrap())
        .await
        .unwrap();
    assert_eq!(
        template.latest_published_version,
        Some(TemplateVersionId::parse(&sim.templates()[0].1).unwrap())
    );
    assert!(!persona.rate_limits().await.unwrap().is_empty());

    // A permanent error surfaces Persona's title and pointer, and is not retried.
    let mut bad = request(&sim, &ReferenceId::generate(), false);
    bad.template_id = "itmpl_doesnotexist".parse().unwrap();
    let before = sim.requests().len();
    let err = persona
        .create_inquiry(&bad, &IdempotencyKey::generate())
        .await
        .unwrap_err();
    assert!(!err.is_transient());
    let shown = err.to_string();
    let detail = &err.details()[0];
    assert!(shown.contains(&detail.title), "{shown}");
    if let Some(pointer) = &detail.pointer {
        assert!(shown.contains(pointer.as_str()), "{shown}");
    }
    assert_eq!(
        sim.requests().len(),
        before + 1,
        "a permanent error is not retried"
    );

    assert_all_conform(&sim);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_reads_250_inquiries_in_three_pages() {
    let sim = start_sim(|_| {}).await;
    let persona = client(&sim, 60_000);
    let template = sim.templates()[0].0.clone();
    for _ in 0..250 {
        persona
            .create_inquiry(
                &request(&sim, &ReferenceId::generate(), false),
                &IdempotencyKey::generate(),
            )
            .await
            .unwrap();
    }
    sim.clear_requests();
    let all = persona
        .list_inquiries(&ListFilter {
            template_id: Some(TemplateId::parse(&template).unwrap()),
            ..ListFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 250);
    let ids: std::collections::HashSet<_> = all.iter().map(|i| i.id.clone()).collect();
    assert_eq!(ids.len(), 250, "no inquiry twice across pages");
    assert_eq!(sim.count_requests("GET", "/inquiries"), 3);
    assert_all_conform(&sim);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_retried_after_a_dropped_connection_makes_one_inquiry() {
    let sim = start_sim(|_| {}).await;
    let persona = client(&sim, 6000);
    sim.set_faults(Faults {
        drops_next: 1,
        ..Faults::default()
    });
    let key = IdempotencyKey::generate();
    let created = persona
        .create_inquiry(&request(&sim, &ReferenceId::generate(), false), &key)
        .await
        .unwrap();
    assert_eq!(sim.inquiries().len(), 1, "one inquiry despite the retry");
    assert_eq!(sim.inquiries()[0].id, created.inquiry.id.as_str());
    let posts: Vec<_> = sim
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(posts.len(), 2, "the create was sent twice");
    assert!(
        posts[1].replayed,
        "the second answer came from the idempotency store"
    );
    let keys: Vec<_> = posts
        .iter()
        .map(|r| {
            r.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("idempotency-key"))
                .unwrap()
                .1
                .clone()
        })
        .collect();
    assert_eq!(keys[0], keys[1]);
    assert_eq!(keys[0], key.as_str());
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_waited_out_and_the_call_succeeds() {
    let sim = start_sim(|c| c.rate_limit_per_minute = Some(1000)).await;
    let persona = client(&sim, 600);
    // Open the simulator's window and move to its end so its RateLimit-Reset is short.
    persona.rate_limits().await.unwrap();
    sim.advance_clock(Duration::from_secs(58));
    sim.set_faults(Faults {
        rate_limited_next: 1,
        ..Faults::default()
    });
    let started = std::time::Instant::now();
    persona
        .create_inquiry(
            &request(&sim, &ReferenceId::generate(), false),
            &IdempotencyKey::generate(),
        )
        .await
        .unwrap();
    let waited = started.elapsed();
    let statuses: Vec<_> = sim.requests().iter().map(|r| r.status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == Some(429)).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(sim.inquiries().len(), 1);
    // It waited for the reset the simulator announced (about 2 s), not a fixed guess.
    assert!(waited >= Duration::from_secs(1), "retried after {waited:?}");
    sim.shutdown().await;
}
