//! The simulator answers every endpoint in the shapes of Persona's OpenAPI spec: each request
//! and response it logged is checked against the spec, and the check is shown to fail on
//! malformed bodies.

use std::collections::BTreeSet;
use std::time::Duration;

use persona_sim::{Action, Faults, RecordedRequest};
use serde_json::{Value, json};

use crate::support::sim::{Api, WebhookSink, http_client, start_sim};
use crate::support::spec::{validate_request_body, validate_response, validate_webhook};

const OPERATIONS: &[(&str, &str)] = &[
    ("GET", "/inquiries"),
    ("POST", "/inquiries"),
    ("GET", "/inquiries/{inquiry-id}"),
    ("POST", "/inquiries/{inquiry-id}/resume"),
    ("POST", "/inquiries/{inquiry-id}/expire"),
    ("POST", "/inquiries/{inquiry-id}/generate-one-time-link"),
    ("GET", "/inquiry-templates/{inquiry-template-id}"),
    ("GET", "/rate-limits"),
    ("POST", "/inquiries/search"),
];

#[tokio::test]
async fn every_endpoint_answers_in_the_spec_shape() {
    let sink = WebhookSink::start().await;
    let sim = start_sim(|c| {
        c.rate_limit_per_minute = Some(10_000);
        c.webhook = Some(sink.target("wbhsec_conformance"));
    })
    .await;
    let api = Api::new(&sim);
    let (template, version) = sim.templates()[0].clone();
    let template = template.to_string();

    // Create: every documented attribute and meta flag, then by version id, then failures.
    let full = api
        .post(
            "/inquiries?include=inquiry-template",
            Some(json!({
                "data": {"attributes": {
                    "inquiry-template-id": template,
                    "reference-id": "ref_deprecated_attribute",
                    "fields": {"name-first": "Alex", "name-last": "Sample", "birthdate": "1990-02-03",
                               "email-address": "alex@example.com", "address-country-code": "GB"},
                    "redirect-uri": "https://app.example.com/done",
                    "note": "conformance", "tags": ["sim"]
                }},
                "meta": {
                    "auto-create-account-reference-id": "ref_conformance",
                    "auto-create-inquiry-session": true,
                    "auto-create-one-time-link": true,
                    "expiration-after-create-interval-seconds": 7200,
                    "expiration-after-start-interval-seconds": 3600,
                    "expiration-after-resume-interval-seconds": 3600,
                    "one-time-link-expiration-seconds": 600
                }
            })),
            Some("conformance-create-1"),
        )
        .await;
    assert_eq!(full.status, 201, "{:?}", full.body);
    let id = full.body["data"]["id"].as_str().unwrap().to_owned();
    let by_version = api
        .post(
            "/inquiries",
            Some(
                json!({"data": {"attributes": {"inquiry-template-version-id": version.as_str()}}}),
            ),
            None,
        )
        .await;
    assert_eq!(by_version.status, 201);
    let other = by_version.body["data"]["id"].as_str().unwrap().to_owned();
    let missing_template = json!({"data": {"attributes": {"note": "no template"}}});
    assert_eq!(
        api.post("/inquiries", Some(missing_template), None)
            .await
            .status,
        400
    );
    let unknown_template = json!({"data": {"attributes": {"inquiry-template-id": "itmpl_nope"}}});
    assert_eq!(
        api.post("/inquiries", Some(unknown_template), None)
            .await
            .status,
        404
    );
    let zero_interval = json!({
        "data": {"attributes": {"inquiry-template-id": template}},
        "meta": {"expiration-after-create-interval-seconds": 0}
    });
    assert_eq!(
        api.post("/inquiries", Some(zero_interval), None)
            .await
            .status,
        422
    );
    let reused_key =
        json!({"data": {"attributes": {"inquiry-template-id": template, "note": "other"}}});
    assert_eq!(
        api.post("/inquiries", Some(reused_key), Some("conformance-create-1"))
            .await
            .status,
        422
    );

    // List and retrieve.
    assert_eq!(api.get("/inquiries").await.status, 200);
    let filtered = format!(
        "/inquiries?filter%5Bstatus%5D=created%2Cpending&filter%5Breference-id%5D=ref_conformance\
         &filter%5Binquiry-template-id%5D={template}&page%5Bsize%5D=1"
    );
    assert_eq!(api.get(&filtered).await.status, 200);
    let paged = api.get("/inquiries?page%5Bsize%5D=1").await;
    let next = paged.body["links"]["next"].as_str().unwrap().to_owned();
    let next = next.trim_start_matches("/api/v1");
    assert_eq!(api.get(next).await.status, 200);
    assert_eq!(
        api.get("/inquiries?include=inquiry-template").await.status,
        400
    );
    assert_eq!(api.get("/inquiries?page%5Bsize%5D=101").await.status, 400);
    assert_eq!(api.get(&format!("/inquiries/{id}")).await.status, 200);
    let with_template = api
        .get(&format!(
            "/inquiries/{id}?include=inquiry-template,inquiry-template-version"
        ))
        .await;
    assert_eq!(with_template.status, 200);
    assert_eq!(with_template.body["included"].as_array().unwrap().len(), 2);
    assert_eq!(api.get("/inquiries/inq_doesnotexist").await.status, 404);

    // Resume, expire, one-time links, through their success and error paths.
    assert_eq!(
        api.post(&format!("/inquiries/{id}/resume"), None, None)
            .await
            .status,
        200
    );
    let otl = api
        .post(
            &format!("/inquiries/{id}/generate-one-time-link"),
            Some(json!({"meta": {"expires-in-seconds": 3600}})),
            None,
        )
        .await;
    assert_eq!(otl.status, 200);
    let bad_otl = api
        .post(
            &format!("/inquiries/{id}/generate-one-time-link"),
            Some(json!({"meta": {"expires-in-seconds": 0}})),
            None,
        )
        .await;
    assert_eq!(bad_otl.status, 422);
    assert_eq!(
        api.post(&format!("/inquiries/{id}/expire"), None, None)
            .await
            .status,
        200
    );
    let otl_on_expired = api
        .post(
            &format!("/inquiries/{id}/generate-one-time-link"),
            None,
            None,
        )
        .await;
    assert_eq!(otl_on_expired.status, 409);
    assert_eq!(
        api.post(&format!("/inquiries/{id}/resume"), None, None)
            .await
            .status,
        200
    );
    assert_eq!(
        api.post("/inquiries/inq_doesnotexist/resume", None, None)
            .await
            .status,
        404
    );
    let other_id = inquiry_mailer::domain::InquiryId::parse(&other).unwrap();
    sim.act(&other_id, Action::Complete).unwrap();
    sim.act(&other_id, Action::MarkForReview).unwrap();
    sim.act(&other_id, Action::Approve).unwrap();
    assert_eq!(
        api.post(&format!("/inquiries/{other}/resume"), None, None)
            .await
            .status,
        409
    );
    assert_eq!(
        api.post(&format!("/inquiries/{other}/expire"), None, None)
            .await
            .status,
        409
    );
    assert_eq!(
        api.post(
            &format!("/inquiries/{other}/generate-one-time-link"),
            None,
            None
        )
        .await
        .status,
        409
    );

    // Templates and rate limits.
    assert_eq!(
        api.get(&format!("/inquiry-templates/{template}"))
            .await
            .status,
        200
    );
    let with_version = api
        .get(&format!(
            "/inquiry-templates/{template}?include=latest-published-version"
        ))
        .await;
    assert_eq!(with_version.status, 200);
    assert_eq!(
        api.get("/inquiry-templates/itmpl_doesnotexist")
            .await
            .status,
        404
    );
    assert_eq!(api.get("/rate-limits").await.status, 200);

    // Search: a query of the template's completed inquiries, then one the spec refuses.
    let search = api
        .post(
            "/inquiries/search",
            Some(json!({
                "query": {"and": [
                    {"attribute": "inquiry_template_id", "operator": "eq", "value": template},
                    {"attribute": "status", "operator": "eq", "value": "completed"}]},
                "sort": {"attribute": "created_at", "direction": "asc"},
                "page": {"size": 10}
            })),
            None,
        )
        .await;
    assert_eq!(search.status, 200, "{:?}", search.body);
    assert_eq!(
        api.post(
            "/inquiries/search",
            Some(json!({"query": {"attribute": "color", "operator": "eq", "value": "red"}})),
            None,
        )
        .await
        .status,
        400
    );

    // Auth and rate limiting.
    assert_eq!(
        api.with_key("persona_sandbox_wrong")
            .get("/inquiries")
            .await
            .status,
        401
    );
    sim.set_faults(Faults {
        rate_limited_next: 1,
        ..Faults::default()
    });
    assert_eq!(api.get("/rate-limits").await.status, 429);

    // Read everything back through the control surface and hold it against the spec.
    let log: Vec<Value> = http_client()
        .get(format!("{}/requests", sim.control_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(log.len(), sim.requests().len());
    let mut failures = Vec::new();
    let mut seen_operations = BTreeSet::new();
    let mut seen_statuses = BTreeSet::new();
    for entry in &sim.requests() {
        let RecordedRequest {
            method,
            route,
            status,
            response,
            body,
            ..
        } = entry;
        let route = route
            .as_deref()
            .expect("every request hit a documented route");
        let status = status.expect("no connection was dropped");
        seen_operations.insert((method.clone(), route.to_owned()));
        seen_statuses.insert(status);
        let response = response.as_ref().expect("every answer has a JSON body");
        if let Err(errors) = validate_response(method, route, status, response) {
            failures.push(format!("{method} {route} → {status}: {errors:?}"));
        }
        // Requests the simulator accepted must be valid requests by the spec, too.
        if let (Some(body), 200..=299) = (body, status)
            && let Err(errors) = validate_request_body(method, route, body)
        {
            failures.push(format!("request {method} {route}: {errors:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "spec violations:\n{}",
        failures.join("\n")
    );
    for (method, route) in OPERATIONS {
        assert!(
            seen_operations.contains(&(method.to_string(), route.to_string())),
            "{method} {route} was not exercised"
        );
    }
    for status in [200, 201, 400, 401, 404, 409, 422, 429] {
        assert!(seen_statuses.contains(&status), "no {status} was checked");
    }

    // Webhooks: each delivered body is a valid event of its kind.
    let deliveries = sim.wait_for_deliveries(7, Duration::from_secs(10)).await;
    let names: BTreeSet<&str> = deliveries.iter().map(|d| d.name.as_str()).collect();
    for expected in [
        "inquiry.created",
        "inquiry.expired",
        "inquiry.started",
        "inquiry.completed",
        "inquiry.marked-for-review",
        "inquiry.approved",
    ] {
        assert!(
            names.contains(expected),
            "no {expected} webhook in {names:?}"
        );
    }
    for d in &deliveries {
        let body: Value = serde_json::from_str(&d.body).unwrap();
        if let Err(errors) = validate_webhook(&d.name, &body) {
            panic!("webhook {} violates the spec: {errors:?}", d.name);
        }
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn the_spec_check_rejects_malformed_bodies() {
    let sim = start_sim(|_| {}).await;
    let api = Api::new(&sim);
    let template = sim.templates()[0].0.to_string();
    let created = api.create(&template, json!({})).await;
    let id = created["data"]["id"].as_str().unwrap();
    let good = api.get(&format!("/inquiries/{id}")).await.body;
    let route = "/inquiries/{inquiry-id}";
    validate_response("GET", route, 200, &good).expect("the real answer passes");

    let mut numeric_status = good.clone();
    numeric_status["data"]["attributes"]["status"] = json!(3);
    assert!(validate_response("GET", route, 200, &numeric_status).is_err());

    let no_data = json!({"included": []});
    assert!(validate_response("GET", route, 200, &no_data).is_err());

    let mut missing_attribute = good.clone();
    missing_attribute["data"]["attributes"]
        .as_object_mut()
        .unwrap()
        .remove("expires-at");
    assert!(validate_response("GET", route, 200, &missing_attribute).is_err());

    let mut bad_time = good.clone();
    bad_time["data"]["attributes"]["created-at"] = json!("yesterday");
    assert!(validate_response("GET", route, 200, &bad_time).is_err());

    let list = api.get("/inquiries").await.body;
    validate_response("GET", "/inquiries", 200, &list).expect("the real list passes");
    let mut no_links = list.clone();
    no_links.as_object_mut().unwrap().remove("links");
    assert!(validate_response("GET", "/inquiries", 200, &no_links).is_err());

    let unauthorized = json!({"errors": [{"title": "Must be authenticated", "details": "extra"}]});
    assert!(validate_response("GET", "/inquiries", 401, &unauthorized).is_err());
    assert!(validate_response("GET", route, 418, &good).is_err());
    let bad_request = json!({"data": {"attributes": {"inquiry-template-id": 5}}});
    assert!(validate_request_body("POST", "/inquiries", &bad_request).is_err());
    sim.shutdown().await;
}
